//! The `Packages` format against real Portage: round trips of files Portage wrote, and
//! differential checks against Portage's own Python (PackageIndex.write, use_reduce).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use binfarm::index::{depstr, repo_revisions_json, Entry, IndexError, PackagesIndex};

fn fixture(name: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/index")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("fixture readable");
    (path, text)
}

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("BINFARM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    venv.join("bin/python")
}

/// Runs a Python script with the Portage venv, feeding `input` on stdin.
fn run_python(script: &str, input: &str) -> String {
    let mut child = Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("Portage venv python runs (set BINFARM_VENV)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write to python");
    let out = child.wait_with_output().expect("python finished");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 from python")
}

fn timestamp_of(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("TIMESTAMP: "))
        .expect("TIMESTAMP line")
        .parse()
        .expect("numeric TIMESTAMP")
}

#[test]
fn portage_written_indexes_round_trip_byte_for_byte() {
    for name in ["Packages.emaint-fix", "Packages.after-builds"] {
        let (path, text) = fixture(name);
        let index = PackagesIndex::parse(&text, &path).expect("parses");
        assert_eq!(index.render(timestamp_of(&text)), text, "{name}");
    }
}

#[test]
fn parsed_entries_carry_header_chost_and_file_key_names() {
    let (path, text) = fixture("Packages.emaint-fix");
    let index = PackagesIndex::parse(&text, &path).expect("parses");
    assert_eq!(index.entries.len(), 4);
    assert_eq!(index.header.get("PACKAGES").map(String::as_str), Some("4"));
    let greeter = &index.entries[0];
    assert_eq!(greeter.cpv(), "app-misc/greeter-1.0");
    // CHOST is only in the header; a reader gets it per entry, as Portage's does.
    assert_eq!(greeter.get("CHOST"), Some("x86_64-pc-linux-gnu"));
    assert_eq!(greeter.get("MTIME"), Some("1795708333"));
    assert_eq!(greeter.get("REPO"), Some("farm-test"));
    assert_eq!(greeter.value("SLOT"), "0");
    assert_eq!(greeter.path(), "app-misc/greeter/greeter-1.0-1.gpkg.tar");
    // Same-CPV entries stay in file order.
    assert_eq!(index.entries[1].build_id(), 2);
    assert_eq!(index.entries[2].build_id(), 1);
}

fn entry(fields: &[(&str, &str)]) -> Entry {
    let mut e = Entry::default();
    for (k, v) in fields {
        e.set(*k, *v);
    }
    e
}

#[test]
fn defaults_empty_values_and_header_values_are_left_out() {
    let mut index = PackagesIndex::default();
    index.header.insert("VERSION".into(), "0".into());
    index
        .header
        .insert("CHOST".into(), "x86_64-pc-linux-gnu".into());
    index.entries.push(entry(&[
        ("CPV", "a/b-1"),
        ("EAPI", "0"),
        ("SLOT", "0"),
        ("IUSE", ""),
        ("CHOST", "x86_64-pc-linux-gnu"),
        ("REPO", "gentoo"),
    ]));
    index.entries.push(entry(&[
        ("CPV", "a/c-1"),
        ("EAPI", "8"),
        ("SLOT", "0/1"),
        ("CHOST", "i686-pc-linux-gnu"),
    ]));
    let text = index.render(7);
    assert_eq!(
        text,
        "CHOST: x86_64-pc-linux-gnu\nPACKAGES: 2\nTIMESTAMP: 7\nVERSION: 0\n\n\
         CPV: a/b-1\nREPO: gentoo\n\n\
         CHOST: i686-pc-linux-gnu\nCPV: a/c-1\nEAPI: 8\nSLOT: 0/1\n\n"
    );
}

#[test]
fn keys_are_ordered_by_portage_internal_names() {
    let mut index = PackagesIndex::default();
    index.header.insert("VERSION".into(), "0".into());
    index.header.insert("REPO".into(), "x".into());
    index.header.insert("USE".into(), "a".into());
    index.entries.push(entry(&[
        ("CPV", "a/b-1"),
        ("MTIME", "5"),
        ("REPO", "gentoo"),
        ("DESC", "d"),
        ("DEPEND", "x/y"),
        ("EAPI", "8"),
        ("USE", "u"),
        ("USER_PATCHES", "p"),
    ]));
    let text = index.render(1);
    assert_eq!(
        text,
        "PACKAGES: 1\nTIMESTAMP: 1\nUSE: a\nVERSION: 0\nREPO: x\n\n\
         CPV: a/b-1\nDEPEND: x/y\nDESC: d\nEAPI: 8\nUSE: u\nUSER_PATCHES: p\nMTIME: 5\nREPO: gentoo\n\n"
    );
}

#[test]
fn entries_are_sorted_by_cpv_and_ties_keep_their_order() {
    let mut index = PackagesIndex::default();
    index.header.insert("VERSION".into(), "0".into());
    for (cpv, id) in [
        ("b/x-1", "2"),
        ("a/y-1", "1"),
        ("b/x-1", "1"),
        ("a/x-10", "1"),
        ("a/x-9", "1"),
    ] {
        index.entries.push(entry(&[("CPV", cpv), ("BUILD_ID", id)]));
    }
    let text = index.render(1);
    let order: Vec<&str> = text
        .split("\n\n")
        .skip(1)
        .filter(|b| !b.is_empty())
        .collect();
    // Plain string order (Portage compares CPV strings), not version order.
    assert_eq!(
        order,
        [
            "BUILD_ID: 1\nCPV: a/x-10",
            "BUILD_ID: 1\nCPV: a/x-9",
            "BUILD_ID: 1\nCPV: a/y-1",
            "BUILD_ID: 2\nCPV: b/x-1",
            "BUILD_ID: 1\nCPV: b/x-1",
        ]
    );
}

fn parse_error(text: &str) -> (usize, String) {
    match PackagesIndex::parse(text, Path::new("/pkgdir/Packages")) {
        Err(IndexError::Parse { line, message, .. }) => (line, message),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn malformed_indexes_fail_with_the_line_number() {
    let (line, message) = parse_error("VERSION: 0\n\nCPV: a/b-1\nno colon here\n\n");
    assert_eq!(line, 4);
    assert!(message.contains("Key: value"), "{message}");

    let (line, message) = parse_error("VERSION: 0\n\nCPV: a/b-1\nSIZE: 1\nSIZE: 2\n\n");
    assert_eq!(line, 5);
    assert!(message.contains("twice"), "{message}");

    let (line, message) = parse_error("VERSION: 0\n\nSIZE: 1\nMD5: x\n\n");
    assert_eq!(line, 3);
    assert!(message.contains("without CPV"), "{message}");

    let (line, message) = parse_error("VERSION: 0\n\nCPV: a/b-1\n\n\nCPV: a/c-1\n\n");
    assert_eq!(line, 5);
    assert!(message.contains("two blank lines"), "{message}");

    let (_, message) = parse_error("TIMESTAMP: 1\n\nCPV: a/b-1\n\n");
    assert!(message.contains("no VERSION"), "{message}");

    let (_, message) = parse_error("VERSION: 1\n\n");
    assert!(message.contains("unsupported VERSION"), "{message}");

    let (line, message) = parse_error("VERSION:0\n\n");
    assert_eq!(line, 1);
    assert!(message.contains("space"), "{message}");

    // CRLF line ends and trailing blank lines are accepted.
    let index = PackagesIndex::parse("VERSION: 0\r\n\r\nCPV: a/b-1\r\n\r\n\n\n", Path::new("P"))
        .expect("parses");
    assert_eq!(index.entries.len(), 1);
}

#[test]
fn repo_revisions_header_is_formatted_like_python_json() {
    let mut revs = BTreeMap::new();
    revs.insert("gentoo".to_string(), "0123abcd".to_string());
    revs.insert("farm-test".to_string(), "caf\u{e9} \"q\"\\\t".to_string());
    let ours = repo_revisions_json(&revs);
    let python = run_python(
        "import json,sys; d=json.load(sys.stdin); print(json.dumps(d, ensure_ascii=False, sort_keys=True), end='')",
        &serde_json::to_string(&revs).expect("json"),
    );
    assert_eq!(ours, python);
    assert_eq!(repo_revisions_json(&BTreeMap::new()), "{}");
}

/// Small deterministic generator for the differential tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// The names Portage uses inside for the keys that are renamed in the file.
fn internal_name(key: &str) -> &str {
    match key {
        "DESC" => "DESCRIPTION",
        "MTIME" => "_mtime_",
        "REPO" => "repository",
        other => other,
    }
}

const PY_WRITE_INDEX: &str = r#"
import io, json, sys
from portage.dbapi.bintree import binarytree

class Settings(dict):
    features = set()

tree = binarytree(pkgdir="/nonexistent", settings=Settings(CHOST=""))
texts = []
for data in json.load(sys.stdin):
    index = tree._new_pkgindex()
    index.header.update(data["header"])
    index.packages = data["packages"]
    index.header["TIMESTAMP"] = str(data["timestamp"])
    index.header["PACKAGES"] = str(len(data["packages"]))
    index.modified = False
    out = io.StringIO()
    index.write(out)
    texts.append(out.getvalue())
json.dump(texts, sys.stdout)
"#;

#[test]
fn portage_package_index_writes_exactly_what_we_render() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let keys = [
        "BDEPEND",
        "BUILD_ID",
        "BUILD_TIME",
        "CHOST",
        "DEFINED_PHASES",
        "DEPEND",
        "DESC",
        "EAPI",
        "IDEPEND",
        "IUSE",
        "KEYWORDS",
        "LICENSE",
        "MD5",
        "MTIME",
        "PATH",
        "PDEPEND",
        "PROPERTIES",
        "PROVIDES",
        "RDEPEND",
        "REPO",
        "REQUIRES",
        "RESTRICT",
        "SHA1",
        "SIZE",
        "SLOT",
        "USE",
        "USER_PATCHES",
        "BASE_URI",
    ];
    let values = [
        "",
        "0",
        "1",
        "8",
        "0/1",
        "x86_64-pc-linux-gnu",
        "gentoo",
        "a b  c",
        "dev-libs/x:=",
    ];
    let cpvs = [
        "app-misc/hello-1.0",
        "app-misc/hello-1.0-r1",
        "dev-libs/a-2",
        "dev-libs/a-10",
        "x11/b-0",
    ];
    let mut rounds = Vec::new();
    for round in 0..200u64 {
        let mut header = BTreeMap::new();
        header.insert("VERSION".to_string(), "0".to_string());
        for key in [
            "CHOST", "REPO", "USE", "ARCH", "URI", "TTL", "PROFILE", "ELIBC",
        ] {
            if rng.chance(60) {
                header.insert(key.to_string(), rng.pick(&values).to_string());
            }
        }
        let mut entries = Vec::new();
        for _ in 0..rng.below(12) {
            let mut e = Entry::default();
            e.set("CPV", rng.pick(&cpvs));
            for _ in 0..rng.below(14) {
                let key = rng.pick(&keys);
                let value = if ["CHOST", "REPO"].contains(&key) && rng.chance(50) {
                    header.get(key).cloned().unwrap_or_default()
                } else {
                    rng.pick(&values).to_string()
                };
                e.set(key, value);
            }
            entries.push(e);
        }
        rounds.push((PackagesIndex { header, entries }, 1_700_000_000 + round));
    }
    let to_internal = |m: &BTreeMap<String, String>| -> serde_json::Map<String, serde_json::Value> {
        m.iter()
            .map(|(k, v)| {
                (
                    internal_name(k).to_string(),
                    serde_json::Value::from(v.as_str()),
                )
            })
            .collect()
    };
    let input: Vec<serde_json::Value> = rounds
        .iter()
        .map(|(index, timestamp)| {
            serde_json::json!({
                "header": to_internal(&index.header),
                "packages": index.entries.iter().map(|e| to_internal(&e.fields)).collect::<Vec<_>>(),
                "timestamp": timestamp,
            })
        })
        .collect();
    let output = run_python(PY_WRITE_INDEX, &serde_json::Value::from(input).to_string());
    let portage_texts: Vec<String> = serde_json::from_str(&output).expect("python json");
    assert_eq!(portage_texts.len(), rounds.len());
    for (round, ((index, timestamp), portage_text)) in rounds.iter().zip(&portage_texts).enumerate()
    {
        assert_eq!(&index.render(*timestamp), portage_text, "round {round}");
        // What Portage wrote reads back and renders to the same bytes.
        let reread = PackagesIndex::parse(portage_text, Path::new("Packages")).expect("parses");
        assert_eq!(
            &reread.render(*timestamp),
            portage_text,
            "round {round} reread"
        );
    }
}

const PY_USE_REDUCE: &str = r#"
import json, sys
from portage.dep import use_reduce, paren_enclose, Atom
results = []
for case in json.load(sys.stdin):
    try:
        reduced = use_reduce(case["s"], uselist=frozenset(case["use"]),
                             token_class=Atom if case["atoms"] else None)
        results.append(paren_enclose(reduced))
    except Exception as e:
        results.append(None)
json.dump(results, sys.stdout)
"#;

fn random_depstr(rng: &mut Rng, depth: usize, atoms: bool, out: &mut Vec<String>) {
    let atom_tokens = [
        "dev-libs/a",
        ">=dev-libs/b-1.2:0/1=",
        "dev-libs/c[x?,!y?,z=,!w=,-v]",
        "!dev-libs/d",
        "!!app-misc/e:2",
        "=app-misc/f-1*",
        "app-misc/g[x(+)?]",
        "app-misc/h:=[y]",
    ];
    let plain_tokens = ["MIT", "GPL-2", "BSD", "mirror", "test", "strip"];
    let tokens: &[&str] = if atoms { &atom_tokens } else { &plain_tokens };
    let count = 1 + rng.below(4);
    for _ in 0..count {
        let kind = if depth == 0 { 0 } else { rng.below(5) };
        match kind {
            0 | 1 => out.push(rng.pick(tokens).to_string()),
            2 => {
                out.push("||".into());
                out.push("(".into());
                random_depstr(rng, depth - 1, atoms, out);
                out.push(")".into());
            }
            3 => {
                let flag = rng.pick(&["x?", "!x?", "y?", "!y?", "z?"]);
                out.push(flag.into());
                out.push("(".into());
                random_depstr(rng, depth - 1, atoms, out);
                out.push(")".into());
            }
            _ => {
                out.push("(".into());
                random_depstr(rng, depth - 1, atoms, out);
                out.push(")".into());
            }
        }
    }
}

#[test]
fn use_conditional_reduction_matches_portage() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut cases = Vec::new();
    for i in 0..20000 {
        let atoms = i % 3 != 0;
        let mut tokens = Vec::new();
        let depth = 1 + rng.below(4);
        random_depstr(&mut rng, depth, atoms, &mut tokens);
        // Sometimes break the structure or an atom, to compare what is refused.
        if rng.chance(5) {
            let at = rng.below(tokens.len());
            tokens.remove(at);
        }
        if atoms && !tokens.is_empty() && rng.chance(5) {
            let at = rng.below(tokens.len());
            if tokens[at].contains('/') {
                tokens[at] = rng
                    .pick(&[
                        "dev-libs/x-1",
                        ">=dev-libs/y",
                        "dev-libs/z:",
                        "dev-libs/w[",
                        "dev-libs/v[a,,b]",
                        "noslash",
                        "dev-libs/u[x?]]",
                        "dev-libs/t::",
                        "=dev-libs/s-1.0*[x=]",
                        "~dev-libs/r-1.0-r1",
                        "dev-libs/q:0/1/2",
                    ])
                    .to_string();
            }
        }
        let use_flags: Vec<&str> = ["x", "y", "z", "w"]
            .into_iter()
            .filter(|_| rng.chance(50))
            .collect();
        cases.push((tokens.join(" "), use_flags, atoms));
    }
    let input: Vec<serde_json::Value> = cases
        .iter()
        .map(|(s, u, a)| serde_json::json!({"s": s, "use": u, "atoms": a}))
        .collect();
    let output = run_python(PY_USE_REDUCE, &serde_json::Value::from(input).to_string());
    let expected: Vec<Option<String>> = serde_json::from_str(&output).expect("python json");
    assert_eq!(expected.len(), cases.len());
    let mut mismatches = Vec::new();
    for ((s, use_flags, atoms), want) in cases.iter().zip(&expected) {
        let set = use_flags.iter().copied().collect();
        let got = depstr::reduce(s, &set, *atoms).ok();
        if &got != want {
            mismatches.push(format!(
                "{s:?} use={use_flags:?}: portage {want:?}, ours {got:?}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first ones:\n{}",
        mismatches.len(),
        mismatches[..mismatches.len().min(10)].join("\n")
    );
}
