//! `index::update_pkgdir` behaviour on PKGDIRs of gpkg files written here (with
//! binfarm's gpkg writer, signed with keys made by real gpg): what is reused, read,
//! dropped and left out, signatures, the header rules, the files' attributes.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use binfarm::binpkg::{self, GpkgSource, WriteOptions};
use binfarm::index::{
    update_pkgdir, IndexOptions, IndexReport, PackagesIndex, PACKAGES_FILE, PACKAGES_GZ_FILE,
};
use binfarm::sign::{Keyring, SigningKey};
use sha2::Digest;

/// Writes a gpkg holding `metadata` (and one image file) with binfarm's gpkg writer,
/// signed when `key` is given; the top directory is the file's stem.
fn write_signed_gpkg(path: &Path, metadata: &[(&str, &str)], key: Option<&SigningKey>) {
    let stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".gpkg.tar"))
        .expect("gpkg name");
    let image = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(image.path().join("usr/share/x")).expect("mkdir");
    std::fs::write(image.path().join("usr/share/x/data"), b"x\n").expect("write");
    let files: BTreeMap<String, Vec<u8>> = metadata
        .iter()
        .map(|(k, v)| ((*k).to_owned(), format!("{v}\n").into_bytes()))
        .collect();
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    binpkg::write_gpkg(
        path,
        &GpkgSource {
            top_dir: stem,
            image_dir: image.path(),
            metadata: &files,
        },
        &WriteOptions {
            zstd_threads: 1,
            signing_key: key,
            mtime: Some(1_700_000_000),
            ..WriteOptions::default()
        },
    )
    .expect("write gpkg");
}

fn write_gpkg(path: &Path, metadata: &[(&str, &str)]) {
    write_signed_gpkg(path, metadata, None);
}

/// A typical package's metadata for `cat/pf` with BUILD_ID `id`.
fn package_metadata(cat: &str, pf: &str, id: u32) -> Vec<(&'static str, String)> {
    vec![
        ("CATEGORY", cat.to_owned()),
        ("PF", pf.to_owned()),
        ("SLOT", "0".to_owned()),
        ("EAPI", "8".to_owned()),
        ("BUILD_ID", id.to_string()),
        ("BUILD_TIME", "1700000000".to_owned()),
        ("CHOST", "x86_64-pc-linux-gnu".to_owned()),
        ("USE", "amd64 ssl".to_owned()),
        ("IUSE", "+ssl doc".to_owned()),
        ("KEYWORDS", "amd64".to_owned()),
        ("LICENSE", "MIT".to_owned()),
        ("DEFINED_PHASES", "compile install".to_owned()),
        (
            "RDEPEND",
            "dev-libs/openssl:0/3= ssl? ( dev-libs/a )\n  doc? ( app-doc/b )".to_owned(),
        ),
        ("repository", "gentoo".to_owned()),
        ("DESCRIPTION", "not copied into the index".to_owned()),
    ]
}

fn add_package(pkgdir: &Path, cat: &str, pn: &str, pf: &str, id: u32) -> String {
    let rel = format!("{cat}/{pn}/{pf}-{id}.gpkg.tar");
    let meta = package_metadata(cat, pf, id);
    let pairs: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (*k, v.as_str())).collect();
    write_gpkg(&pkgdir.join(&rel), &pairs);
    rel
}

fn update(pkgdir: &Path, options: &IndexOptions<'_>) -> IndexReport {
    update_pkgdir(pkgdir, options).expect("index update")
}

fn read_index(pkgdir: &Path) -> PackagesIndex {
    PackagesIndex::read(&pkgdir.join(PACKAGES_FILE)).expect("index parses")
}

#[test]
fn entries_hold_what_portage_puts_there() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pkgdir = tmp.path();
    let rel = add_package(pkgdir, "app-misc", "hello", "hello-1.0-r1", 3);
    let report = update(pkgdir, &IndexOptions::default());
    assert_eq!(
        (report.entries, report.added.len(), report.written),
        (1, 1, true)
    );
    let index = read_index(pkgdir);
    let e = &index.entries[0];
    assert_eq!(e.cpv(), "app-misc/hello-1.0-r1");
    assert_eq!(e.path(), rel);
    assert_eq!(e.get("BUILD_ID"), Some("3"));
    assert_eq!(e.get("REPO"), Some("gentoo"));
    // USE-evaluated, whitespace-normalised; DESCRIPTION is not an index key for emaint.
    assert_eq!(e.get("RDEPEND"), Some("dev-libs/openssl:0/3= dev-libs/a"));
    assert_eq!(e.get("DESC"), None);
    let bytes = std::fs::read(pkgdir.join(&rel)).expect("read");
    assert_eq!(
        e.get("MD5"),
        Some(hex::encode(md5::Md5::digest(&bytes)).as_str())
    );
    assert_eq!(
        e.get("SHA1"),
        Some(hex::encode(sha1::Sha1::digest(&bytes)).as_str())
    );
    assert_eq!(e.get("SIZE"), Some(bytes.len().to_string().as_str()));
    let mtime = std::fs::metadata(pkgdir.join(&rel)).expect("stat").mtime();
    assert_eq!(e.get("MTIME"), Some(mtime.to_string().as_str()));
    // SLOT 0 is Portage's default: not written.
    let text = std::fs::read_to_string(pkgdir.join(PACKAGES_FILE)).expect("read");
    assert!(!text.contains("SLOT:"), "{text}");
}

#[test]
fn misplaced_and_broken_packages_are_left_out_with_reasons() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pkgdir = tmp.path();
    add_package(pkgdir, "app-misc", "good", "good-1", 1);
    // Multi-instance package outside <cat>/<pn>/.
    let meta = package_metadata("app-misc", "stray-1", 1);
    let pairs: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (*k, v.as_str())).collect();
    write_gpkg(&pkgdir.join("app-misc/stray-1-1.gpkg.tar"), &pairs);
    // File name that does not match PF.
    write_gpkg(&pkgdir.join("app-misc/named/other-1-1.gpkg.tar"), &pairs);
    // No SLOT.
    let no_slot: Vec<(&str, &str)> = pairs
        .iter()
        .copied()
        .filter(|(k, _)| *k != "SLOT")
        .collect();
    let mut no_slot_pf = no_slot.clone();
    for p in &mut no_slot_pf {
        if p.0 == "PF" {
            p.1 = "noslot-1";
        }
    }
    write_gpkg(
        &pkgdir.join("app-misc/noslot/noslot-1-1.gpkg.tar"),
        &no_slot_pf,
    );
    // Broken RDEPEND.
    let mut bad_dep = pairs.clone();
    for p in &mut bad_dep {
        match p.0 {
            "PF" => p.1 = "baddep-1",
            "RDEPEND" => p.1 = "|| ( dev-libs/a",
            _ => {}
        }
    }
    write_gpkg(
        &pkgdir.join("app-misc/baddep/baddep-1-1.gpkg.tar"),
        &bad_dep,
    );
    // Not a gpkg at all.
    std::fs::create_dir_all(pkgdir.join("app-misc/junk")).expect("mkdir");
    std::fs::write(pkgdir.join("app-misc/junk/junk-1-1.gpkg.tar"), b"junk").expect("write");

    let report = update(pkgdir, &IndexOptions::default());
    assert_eq!(report.entries, 1, "{report:?}");
    let reasons: BTreeMap<&str, &str> = report
        .rejected
        .iter()
        .map(|r| (r.path.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    assert!(reasons["app-misc/stray-1-1.gpkg.tar"].contains("app-misc/<PN>/"));
    assert!(reasons["app-misc/named/other-1-1.gpkg.tar"].contains("file name"));
    assert!(reasons["app-misc/noslot/noslot-1-1.gpkg.tar"].contains("SLOT"));
    assert!(reasons["app-misc/baddep/baddep-1-1.gpkg.tar"].contains("RDEPEND"));
    assert!(reasons.contains_key("app-misc/junk/junk-1-1.gpkg.tar"));
}

#[test]
fn incremental_runs_reuse_read_and_drop() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pkgdir = tmp.path();
    let a = add_package(pkgdir, "app-misc", "a", "a-1", 1);
    let b = add_package(pkgdir, "app-misc", "b", "b-1", 1);
    let first = update(pkgdir, &IndexOptions::default());
    assert_eq!(first.added.len(), 2);

    let c = add_package(pkgdir, "app-misc", "c", "c-1", 1);
    std::fs::remove_file(pkgdir.join(&b)).expect("rm");
    let report = update(pkgdir, &IndexOptions::default());
    assert_eq!(report.reused, 1);
    assert_eq!(report.added, std::slice::from_ref(&c));
    assert_eq!(report.removed, std::slice::from_ref(&b));
    let cpvs: Vec<String> = read_index(pkgdir)
        .entries
        .iter()
        .map(|e| e.cpv().to_owned())
        .collect();
    assert_eq!(cpvs, ["app-misc/a-1", "app-misc/c-1"]);

    // A changed file (new mtime) is read again; reported as added only.
    let meta = package_metadata("app-misc", "a-1", 1);
    let mut pairs: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (*k, v.as_str())).collect();
    pairs.push(("USER_PATCHES", "0001-fix.patch"));
    write_gpkg(&pkgdir.join(&a), &pairs);
    File::options()
        .write(true)
        .open(pkgdir.join(&a))
        .and_then(|f| {
            f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        })
        .expect("set mtime");
    let report = update(pkgdir, &IndexOptions::default());
    assert_eq!(
        (report.reused, report.added.clone(), report.removed.len()),
        (1, vec![a], 0)
    );
    assert!(read_index(pkgdir).entries[0].get("USER_PATCHES").is_some());

    // --reindex reads everything again, and writes nothing new.
    let before = std::fs::read(pkgdir.join(PACKAGES_FILE)).expect("read");
    let report = update(
        pkgdir,
        &IndexOptions {
            reindex_all: true,
            ..IndexOptions::default()
        },
    );
    assert_eq!(
        (report.reused, report.added.len(), report.written),
        (0, 2, false)
    );
    assert_eq!(
        std::fs::read(pkgdir.join(PACKAGES_FILE)).expect("read"),
        before
    );
}

#[test]
fn header_keys_follow_the_options_and_timestamp_always_moves_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pkgdir = tmp.path();
    add_package(pkgdir, "app-misc", "a", "a-1", 1);
    let mut overrides = BTreeMap::new();
    overrides.insert("ARCH".to_string(), "amd64".to_string());
    overrides.insert("CHOST".to_string(), "x86_64-pc-linux-gnu".to_string());
    overrides.insert(
        "REPO_REVISIONS".to_string(),
        "{\"gentoo\": \"abc\"}".to_string(),
    );
    let first = update(
        pkgdir,
        &IndexOptions {
            header_overrides: overrides,
            uri: Some("https://binhost.example/amd64".into()),
            ttl: Some(3600),
            ..IndexOptions::default()
        },
    );
    let text = std::fs::read_to_string(pkgdir.join(PACKAGES_FILE)).expect("read");
    assert!(text.starts_with(
        "ARCH: amd64\nCHOST: x86_64-pc-linux-gnu\nPACKAGES: 1\nREPO_REVISIONS: {\"gentoo\": \"abc\"}\n"
    ));
    assert!(text.contains("\nTTL: 3600\nURI: https://binhost.example/amd64\nVERSION: 0\n\n"));
    // The entry's CHOST equals the header's: left out.
    assert!(
        !text.contains("\nCHOST: x86_64-pc-linux-gnu\nCPV"),
        "{text}"
    );

    // Next run: profile keys stay from the index; URI and TTL go unless given; ARCH removed.
    let mut overrides = BTreeMap::new();
    overrides.insert("ARCH".to_string(), String::new());
    let second = update(
        pkgdir,
        &IndexOptions {
            header_overrides: overrides,
            ..IndexOptions::default()
        },
    );
    let index = read_index(pkgdir);
    assert_eq!(index.header.get("ARCH"), None);
    assert_eq!(index.header.get("URI"), None);
    assert_eq!(index.header.get("TTL"), None);
    assert_eq!(
        index.header.get("CHOST").map(String::as_str),
        Some("x86_64-pc-linux-gnu")
    );
    assert!(second.written);
    assert!(second.timestamp > first.timestamp, "{first:?} {second:?}");

    // force_write rewrites an unchanged index, with a later TIMESTAMP still.
    let third = update(
        pkgdir,
        &IndexOptions {
            force_write: true,
            ..IndexOptions::default()
        },
    );
    assert!(third.written && third.timestamp > second.timestamp);
}

#[test]
fn files_are_written_atomically_with_portage_attributes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pkgdir = tmp.path();
    std::fs::set_permissions(pkgdir, std::fs::Permissions::from_mode(0o775)).expect("chmod");
    add_package(pkgdir, "app-misc", "a", "a-1", 1);
    let report = update(pkgdir, &IndexOptions::default());
    let timestamp = report.timestamp.expect("timestamp") as i64;
    for name in [PACKAGES_FILE, PACKAGES_GZ_FILE] {
        let meta = std::fs::metadata(pkgdir.join(name)).expect("stat");
        assert_eq!(meta.mtime(), timestamp, "{name}");
        assert_eq!(meta.atime(), timestamp, "{name}");
        // The PKGDIR's group write bit is added to the umask-given mode.
        assert_eq!(meta.mode() & 0o060, 0o060, "{name}: {:o}", meta.mode());
    }
    let gz = std::fs::read(pkgdir.join(PACKAGES_GZ_FILE)).expect("read");
    assert_eq!(
        &gz[..4],
        &[0x1f, 0x8b, 8, 0],
        "gzip header without a file name"
    );
    assert_eq!(
        u32::from_le_bytes([gz[4], gz[5], gz[6], gz[7]]) as i64,
        timestamp
    );
    assert_eq!(&gz[8..10], &[2, 255], "XFL max compression, OS unknown");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .expect("gunzip");
    assert_eq!(
        text,
        std::fs::read_to_string(pkgdir.join(PACKAGES_FILE)).expect("read")
    );
    let leftovers: Vec<String> = std::fs::read_dir(pkgdir)
        .expect("readdir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Without compression the old Packages.gz goes, as with Portage's -compress-index.
    let report = update(
        pkgdir,
        &IndexOptions {
            no_compress: true,
            ..IndexOptions::default()
        },
    );
    assert!(report.written);
    assert!(!pkgdir.join(PACKAGES_GZ_FILE).exists());
    // A Packages.gz out of step with Packages makes the next compressed run write.
    let report = update(pkgdir, &IndexOptions::default());
    assert!(report.written && pkgdir.join(PACKAGES_GZ_FILE).exists());
}

#[test]
fn a_broken_index_is_replaced_and_reported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pkgdir = tmp.path();
    add_package(pkgdir, "app-misc", "a", "a-1", 1);
    let mut f = File::create(pkgdir.join(PACKAGES_FILE)).expect("create");
    f.write_all(b"VERSION: 0\n\nCPV app-misc/a-1\n\n")
        .expect("write");
    drop(f);
    let report = update(pkgdir, &IndexOptions::default());
    let problem = report.previous_index_problem.expect("problem reported");
    assert!(problem.contains("Packages:3:"), "{problem}");
    assert_eq!(
        (report.entries, report.added.len(), report.written),
        (1, 1, true)
    );
}

#[test]
fn cold_run_reads_and_hashes_on_threads() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pkgdir = tmp.path();
    for i in 0..300u32 {
        add_package(
            pkgdir,
            &format!("cat-{}", i % 10),
            &format!("p{i}"),
            &format!("p{i}-1"),
            1,
        );
    }
    let mut timings = Vec::new();
    let mut texts = Vec::new();
    for threads in [1, 2] {
        let _ = std::fs::remove_file(pkgdir.join(PACKAGES_FILE));
        let start = std::time::Instant::now();
        let report = update(
            pkgdir,
            &IndexOptions {
                threads,
                ..IndexOptions::default()
            },
        );
        timings.push((threads, start.elapsed()));
        assert_eq!((report.added.len(), report.rejected.len()), (300, 0));
        let text = std::fs::read_to_string(pkgdir.join(PACKAGES_FILE)).expect("read");
        let without_timestamp: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with("TIMESTAMP: "))
            .map(str::to_owned)
            .collect();
        texts.push(without_timestamp);
    }
    eprintln!("cold index of 300 gpkgs: {timings:?}");
    // Same file whatever the thread count: the order of reading does not show.
    assert_eq!(texts[0], texts[1]);
    assert_eq!(
        texts[0].iter().filter(|l| l.starts_with("CPV: ")).count(),
        300
    );
}

#[test]
fn with_a_keyring_only_packages_with_good_signatures_are_indexed() {
    let farm = common::signing_key();
    let rogue = common::rogue_key();
    let farm_key = SigningKey::from_armored_file(&farm.secret_key_file, None).expect("farm key");
    let rogue_key = SigningKey::from_armored_file(&rogue.secret_key_file, None).expect("rogue key");
    let keyring = Keyring::load(&farm.public_key_file).expect("keyring");

    let tmp = tempfile::tempdir().expect("tempdir");
    let pkgdir = tmp.path();
    let signed_with = |pn: &str, key: Option<&SigningKey>| {
        let pf = format!("{pn}-1");
        let meta = package_metadata("app-misc", &pf, 1);
        let pairs: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let rel = format!("app-misc/{pn}/{pf}-1.gpkg.tar");
        write_signed_gpkg(&pkgdir.join(&rel), &pairs, key);
        rel
    };
    let good = signed_with("good", Some(&farm_key));
    let foreign = signed_with("foreign", Some(&rogue_key));
    let unsigned = signed_with("unsigned", None);

    let options = IndexOptions {
        keyring: Some(&keyring),
        ..IndexOptions::default()
    };
    let report = update(pkgdir, &options);
    assert_eq!(report.added, std::slice::from_ref(&good), "{report:?}");
    let rejected: Vec<&str> = report.rejected.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        rejected,
        [foreign.as_str(), unsigned.as_str()],
        "{report:?}"
    );
    assert!(report.rejected.iter().all(|r| !r.reason.is_empty()));
    let index = read_index(pkgdir);
    assert_eq!(index.entries.len(), 1);
    assert_eq!(index.entries[0].path(), good);

    // Warm: the good one is reused; the others are checked (and left out) again.
    let report = update(pkgdir, &options);
    assert_eq!(
        (report.reused, report.rejected.len(), report.written),
        (1, 2, false)
    );

    // Without a keyring nothing is checked: all three are indexed.
    let report = update(pkgdir, &IndexOptions::default());
    assert_eq!(
        (report.entries, report.rejected.len()),
        (3, 0),
        "{report:?}"
    );
}
