//! Checks `binfarm::atom` against real Portage (the venv's `portage.versions` and `portage.dep`):
//! version comparison, version and atom validity, CPV splitting, and atom matching.
//!
//! All questions go to ONE Python process, one request per line on stdin, one answer per line
//! on stdout, so the whole test takes about a second.

use std::cmp::Ordering;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use binfarm::atom::{Atom, Cpv, Version};

/// Answers each tab-separated request line with one line.
const PORTAGE_ORACLE: &str = r#"
import sys
from portage.versions import vercmp, ververify, catpkgsplit, _pkg_str
from portage.dep import match_from_list, isvalidatom

answers = []
for line in sys.stdin:
    kind, *args = line.rstrip("\n").split("\t")
    if kind == "vercmp":
        r = vercmp(args[0], args[1])
        answers.append("none" if r is None else str((r > 0) - (r < 0)))
    elif kind == "ververify":
        answers.append("1" if ververify(args[0]) else "0")
    elif kind == "isvalidatom":
        ok = isvalidatom(args[0], allow_blockers=True, allow_repo=True)
        answers.append("1" if ok else "0")
    elif kind == "catpkgsplit":
        r = catpkgsplit(args[0])
        answers.append("none" if r is None else " ".join(r))
    elif kind == "match":
        atom, cpv, slot, repo = args
        pkg = _pkg_str(cpv, slot=slot, repo=repo)
        answers.append("1" if match_from_list(atom, [pkg]) else "0")
    else:
        sys.exit("unknown request kind: " + kind)
sys.stdout.write("".join(a + "\n" for a in answers))
"#;

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("BINFARM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "Portage venv not found: {} does not exist. Run scripts/setup.sh to create it \
         (or point BINFARM_VENV at a venv with portage installed).",
        python.display()
    );
    python
}

/// Sends all requests to one Portage process and returns its answers, in order.
fn ask_portage(requests: &[String]) -> Vec<String> {
    let python = venv_python();
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(PORTAGE_ORACLE)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input: String = requests.iter().map(|r| format!("{r}\n")).collect();
    // Write from another thread so a full stdout pipe cannot deadlock us.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("wait for portage oracle");
    writer
        .join()
        .expect("writer thread")
        .expect("write requests to portage oracle");
    assert!(
        output.status.success(),
        "portage oracle failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<String> = String::from_utf8(output.stdout)
        .expect("utf-8 answers")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        answers.len(),
        requests.len(),
        "portage answered {} of {} requests; stderr: {}",
        answers.len(),
        requests.len(),
        String::from_utf8_lossy(&output.stderr)
    );
    answers
}

/// Deterministic xorshift, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random version from small alphabets, so that ties and near-ties are common.
fn random_version(rng: &mut Rng) -> String {
    let mut text = rng.pick(&["0", "1", "2", "01", "10", "007"]).to_owned();
    for _ in 0..rng.below(4) {
        text += ".";
        text += rng.pick(&["0", "00", "1", "01", "10", "001", "9", "99", "010"]);
    }
    if rng.below(4) == 0 {
        text += rng.pick(&["a", "b", "z"]);
    }
    for _ in 0..rng.below(3) {
        text += rng.pick(&["_alpha", "_beta", "_pre", "_rc", "_p"]);
        text += rng.pick(&["", "0", "1", "2", "10", "01"]);
    }
    if rng.below(3) == 0 {
        text += "-r";
        text += rng.pick(&["0", "1", "2", "01", "10"]);
    }
    text
}

/// Hand-picked versions, including the tricky cases of PMS comparison.
const TRICKY_VERSIONS: &[&str] = &[
    "0",
    "1",
    "01",
    "2",
    "1.0",
    "1.00",
    "1.000",
    "1.01",
    "1.001",
    "1.010",
    "1.1",
    "1.10",
    "1.2",
    "1.05",
    "1.4",
    "1.09",
    "0.9",
    "0.10",
    "1.99.99",
    "2.9",
    "2.10",
    "1.500",
    "1.0a",
    "1.0b",
    "1.0z",
    "1.0.0",
    "1.0.0_alpha",
    "1.0.1",
    "1_alpha",
    "1_alpha0",
    "1_alpha1",
    "1_beta",
    "1_beta2",
    "1_pre",
    "1_pre1",
    "1_rc",
    "1_rc1",
    "1_rc10",
    "1_p",
    "1_p0",
    "1_p1",
    "1_p1_alpha",
    "1_p1_p1",
    "1_alpha_p",
    "1.0_rc1",
    "1.0_rc1-r1",
    "1.0_rc1_p1",
    "1.2.3_pre4",
    "1.2.3_pre4_p5",
    "1.2.3_p5",
    "1.2.3_rc1",
    "1-r0",
    "1-r1",
    "1-r01",
    "1-r10",
    "1.0-r1",
    "1.0a_p1",
    "1.0a_p1-r2",
    "20240101",
    "20240101.1",
    "1.123456789012345678901234567890",
    "1.123456789012345678901234567891",
];

#[test]
fn vercmp_agrees_with_portage() {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for a in TRICKY_VERSIONS {
        for b in TRICKY_VERSIONS {
            pairs.push((a.to_string(), b.to_string()));
        }
    }
    let mut rng = Rng(0x005e_ed0f_a70f);
    for _ in 0..1500 {
        pairs.push((random_version(&mut rng), random_version(&mut rng)));
    }
    let requests: Vec<String> = pairs
        .iter()
        .map(|(a, b)| format!("vercmp\t{a}\t{b}"))
        .collect();
    let answers = ask_portage(&requests);

    let mut seen = [0usize; 3];
    for ((a, b), answer) in pairs.iter().zip(&answers) {
        let ours = Version::parse(a)
            .unwrap()
            .vercmp(&Version::parse(b).unwrap());
        let portage = match answer.as_str() {
            "-1" => Ordering::Less,
            "0" => Ordering::Equal,
            "1" => Ordering::Greater,
            other => panic!("portage vercmp({a}, {b}) gave {other:?}"),
        };
        assert_eq!(
            ours, portage,
            "vercmp({a:?}, {b:?}): ours {ours:?}, Portage {portage:?}"
        );
        seen[(portage as i8 + 1) as usize] += 1;
    }
    // The sample must exercise every outcome, ties included.
    assert!(
        seen.iter().all(|&n| n > 50),
        "outcomes less/equal/greater: {seen:?}"
    );
    println!(
        "{} version pairs agree with Portage (less/equal/greater: {seen:?})",
        pairs.len()
    );
}

#[test]
fn version_and_cpv_validity_agrees_with_portage() {
    let versions = [
        "1",
        "1.0",
        "1a",
        "1.0b_p1-r1",
        "",
        "a",
        "1.",
        ".1",
        "1..2",
        "1ab",
        "1A",
        "1_gamma",
        "1_",
        "1__p",
        "1_p_p",
        "1_P1",
        "1-r",
        "1-r1",
        "1-r1-r2",
        "1_rc-r1",
        "1-1",
        "1.0-r1a",
        "1.0_p1a",
        "1.a",
        "1b.2",
        "1 ",
        " 1",
        "1-R1",
        "1_alpha1beta",
        "0",
        "00.00",
        "1.2.3.4.5.6.7.8",
    ];
    let cpvs = [
        "a/b-1",
        "dev-libs/libhello-1.0-r1",
        "a/foo-bar-1.0",
        "a/gtk+-2",
        "a/b-r1-1",
        "a/b-1.0_p1-r2",
        "a/foo-1a-2",
        "a/b",
        "a/b-1-2",
        "a/b-r1",
        "a/-b-1",
        "a/+b-1",
        "+a/b-1",
        ".a/b-1",
        "a./b-1",
        "_a/_b-1",
        "a/b_-1",
        "a/b--1",
        "a/b-1x-1",
        "a/b-1xy-1",
        "a/b.c-1",
        "a/b-1.0-r1-r2",
        "a/b-01-r01",
        "A_B/C+D-1",
        "a/b-c-d-1",
    ];
    let mut requests: Vec<String> = versions.iter().map(|v| format!("ververify\t{v}")).collect();
    requests.extend(cpvs.iter().map(|c| format!("catpkgsplit\t{c}")));
    let answers = ask_portage(&requests);

    for (version, answer) in versions.iter().zip(&answers) {
        let portage = answer == "1";
        let ours = Version::parse(version);
        assert_eq!(
            ours.is_ok(),
            portage,
            "version {version:?}: ours {ours:?}, Portage valid={portage}"
        );
    }
    for (cpv, answer) in cpvs.iter().zip(&answers[versions.len()..]) {
        let ours = Cpv::parse(cpv).map(|c| {
            format!(
                "{} {} {} r{}",
                c.category(),
                c.pn(),
                c.pv(),
                c.version().revision()
            )
        });
        match (&ours, answer.as_str()) {
            (Err(_), "none") => {}
            (Ok(ours), portage) => {
                // Portage writes the revision as given ("r01"); compare its number.
                let parts: Vec<&str> = portage.split(' ').collect();
                assert_eq!(
                    parts.len(),
                    4,
                    "cpv {cpv:?}: ours {ours}, Portage {portage:?}"
                );
                let revision: u64 = parts[3][1..].parse().unwrap();
                let portage = format!("{} {} {} r{revision}", parts[0], parts[1], parts[2]);
                assert_eq!(ours, &portage, "cpv {cpv:?}");
            }
            (Err(e), portage) => panic!("cpv {cpv:?}: we reject ({e}), Portage splits {portage:?}"),
        }
    }
    println!(
        "{} versions and {} CPVs judged alike",
        versions.len(),
        cpvs.len()
    );
}

#[test]
fn atom_validity_agrees_with_portage() {
    let atoms = [
        "sys-apps/portage",
        "!sys-apps/portage",
        "!!sys-apps/portage",
        "!!!sys-apps/portage",
        ">=dev-libs/foo-1.2-r3:0/1.2=::gentoo[ssl,-doc,X?,!test?,a=,!b=,c(+),d(-)?]",
        "=dev-lang/python-3.12*",
        "=dev-lang/python-3.12-r1*",
        ">=dev-lang/python-3.12*",
        "~dev-lang/python-3.12*",
        "~a/b-1.0-r1",
        "=a/b",
        "a/b-1",
        "a/b-1a",
        "a/b-r1",
        "a/b-",
        "a/b-1-2",
        "=a/b-1-2",
        "a/b:0",
        "a/b:*",
        "a/b:=",
        "a/b:0=",
        "a/b:0/1",
        "a/b:0/1=",
        "a/b:",
        "a/b:-a",
        "a/b:+a",
        "a/b:.a",
        "a/b:a/",
        "a/b:/a",
        "a/b:*=",
        "a/b:a=/b",
        "a/b::gentoo",
        "a/b:0::gentoo",
        "a/b::",
        "a/b::-x",
        "a/b::x.y",
        "a/b[]",
        "a/b[a,]",
        "a/b[,a]",
        "a/b[@a]",
        "a/b[a@b]",
        "a/b[a(+)]",
        "a/b[-a(+)]",
        "a/b[!a]",
        "a/b[-a?]",
        "a/b[-a=]",
        "a/b[a(*)]",
        "a/b[a][b]",
        "a/b[a]:0",
        "a/b[a",
        "foo/-bar",
        "foo/+bar",
        "+foo/bar",
        ".foo/bar",
        "-foo/bar",
        "foo/bar+",
        "foo./bar",
        "foo/b.r",
        "foobar",
        "a/b/c",
        "<=a/b-1.0_rc1_p2-r3:slot::repo",
        "a/b*",
        "=a/b-1.0*:2::gentoo[x]",
    ];
    let requests: Vec<String> = atoms.iter().map(|a| format!("isvalidatom\t{a}")).collect();
    let answers = ask_portage(&requests);
    let mut valid = 0;
    for (atom, answer) in atoms.iter().zip(&answers) {
        let portage = answer == "1";
        let ours = Atom::parse(atom);
        assert_eq!(
            ours.is_ok(),
            portage,
            "atom {atom:?}: ours {ours:?}, Portage valid={portage}"
        );
        if let Ok(parsed) = ours {
            assert_eq!(parsed.to_string(), *atom);
            valid += 1;
        }
    }
    assert!(
        valid > 20 && valid < atoms.len() - 20,
        "a mix of valid and invalid atoms"
    );

    // Known difference, on purpose: PMS says a repository name must also be a valid package
    // name (so not end in "-<version>"); Portage does not check that.
    let answers = ask_portage(&["isvalidatom\ta/b::repo-1".to_owned()]);
    assert_eq!(
        answers,
        ["1"],
        "Portage accepts a repository name ending in -1"
    );
    assert!(Atom::parse("a/b::repo-1").is_err());
    println!("{} atoms judged alike ({valid} valid)", atoms.len());
}

#[test]
fn atom_matching_agrees_with_portage() {
    struct Case {
        atom: String,
        cpv: String,
        slot: &'static str,
        repo: &'static str,
    }
    let mut cases = Vec::new();

    // Versions: every operator against tricky versions, no slot or repo restriction.
    let atom_versions = [
        "1",
        "1.0",
        "1.00",
        "01.0",
        "1.0-r1",
        "1.0_rc1",
        "1.2",
        "1.2_rc",
        "1.2_rc1",
        "1.0a",
        "1_p",
        "0.9",
        "1.2.3_pre4_p5",
        "2",
    ];
    let candidates = [
        "1",
        "1.0",
        "1.00",
        "01.0",
        "1.0-r0",
        "1.0-r1",
        "1.0-r2",
        "1.0.0",
        "1.0.1",
        "1.0_rc1",
        "1.0_rc1-r1",
        "1.0_p1",
        "1.0a",
        "1.01",
        "1.1",
        "1.2",
        "1.20",
        "1.2.3",
        "1.2a",
        "1.2_rc",
        "1.2_rc1",
        "1.2_rc10",
        "1.2_rc1_p1",
        "1.2-r1",
        "1.2.3_pre4",
        "1.2.3_pre4_p5",
        "1.2.3_pre4_p5-r1",
        "1_p",
        "1_p1",
        "1a",
        "10",
        "0.9",
        "0.10",
        "2",
        "1.99.99",
        "2.0",
    ];
    for version in atom_versions {
        for op in ["<", "<=", "=", "~", ">=", ">", "=*"] {
            let atom = match op {
                "=*" => format!("=dev-libs/foo-{version}*"),
                _ => format!("{op}dev-libs/foo-{version}"),
            };
            for candidate in candidates {
                cases.push(Case {
                    atom: atom.clone(),
                    cpv: format!("dev-libs/foo-{candidate}"),
                    slot: "0",
                    repo: "gentoo",
                });
            }
        }
    }
    // Names, slots, sub-slots and repositories.
    let atoms = [
        "dev-libs/foo",
        "dev-libs/foo:1",
        "dev-libs/foo:1/2",
        "dev-libs/foo:1/1",
        "dev-libs/foo:1=",
        "dev-libs/foo:1/2=",
        "dev-libs/foo:*",
        "dev-libs/foo:=",
        "dev-libs/foo::gentoo",
        "dev-libs/foo:1::gentoo",
        ">=dev-libs/foo-1:1/2::gentoo",
        "!dev-libs/foo:1",
        "!!<dev-libs/foo-2:2",
        "dev-libs/foo:1[ssl]",
    ];
    let cpvs = ["dev-libs/foo-1", "dev-libs/foobar-1", "dev-util/foo-1"];
    for atom in atoms {
        for cpv in cpvs {
            for slot in ["1", "1/2", "1/3", "2", "10"] {
                for repo in ["gentoo", "other"] {
                    cases.push(Case {
                        atom: atom.to_owned(),
                        cpv: cpv.to_owned(),
                        slot,
                        repo,
                    });
                }
            }
        }
    }

    let requests: Vec<String> = cases
        .iter()
        .map(|c| format!("match\t{}\t{}\t{}\t{}", c.atom, c.cpv, c.slot, c.repo))
        .collect();
    let answers = ask_portage(&requests);
    let mut matched = 0;
    for (case, answer) in cases.iter().zip(&answers) {
        let atom = Atom::parse(&case.atom).unwrap();
        let cpv = Cpv::parse(&case.cpv).unwrap();
        let slot = match case.slot.split_once('/') {
            Some((slot, subslot)) => (slot, Some(subslot)),
            None => (case.slot, None),
        };
        let ours = atom.matches(&cpv, Some(slot), Some(case.repo));
        let portage = answer == "1";
        assert_eq!(
            ours, portage,
            "{} vs {} (slot {}, repo {}): ours {ours}, Portage {portage}",
            case.atom, case.cpv, case.slot, case.repo
        );
        matched += usize::from(ours);
    }
    assert!(
        matched > 200 && matched < cases.len() - 200,
        "a mix of matches and misses"
    );
    println!(
        "{} atom/package pairs agree with Portage ({matched} match)",
        cases.len()
    );
}
