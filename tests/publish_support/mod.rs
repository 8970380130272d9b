//! Shared setup of the publishing tests: real emerge-built gpkgs signed by binfarm, a farm
//! state directory, snapshots of them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use binfarm::binpkg::restamp_and_sign;
use binfarm::profile::{BinpkgFormat, Profile};
use binfarm::publish::{create_snapshot, Publisher, SnapshotOptions};
use binfarm::sign::SigningKey;
use binfarm::store::{Db, Store};

use crate::common;

pub const PROFILE: &str = "x86-64-v3";
pub const HELLO: &str = "app-misc/hello/hello-1.0-1.gpkg.tar";
pub const GREETER: &str = "app-misc/greeter/greeter-1.0-1.gpkg.tar";
pub const LIBHELLO: &str = "dev-libs/libhello/libhello-1.0-1.gpkg.tar";

/// The farm's signing key (the tests' shared gpg key, as binfarm loads it).
pub fn farm_key() -> SigningKey {
    let key = common::signing_key();
    SigningKey::from_armored_file(&key.secret_key_file, None).expect("loading the farm key")
}

/// Unsigned emerge-built gpkgs of hello, greeter and libhello (x86-64-v3), copied into
/// `dir` and signed in place by binfarm with the farm key. Keys: the PKGDIR paths.
pub fn signed_packages(dir: &Path) -> BTreeMap<&'static str, PathBuf> {
    let built = common::build_fixture(
        PROFILE,
        &["app-misc/hello", "app-misc/greeter"],
        false,
        BinpkgFormat::Gpkg,
    );
    let key = farm_key();
    let mut out = BTreeMap::new();
    for rel in [HELLO, GREETER, LIBHELLO] {
        let dest = dir.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(built.pkgdir.join(rel), &dest)
            .unwrap_or_else(|e| panic!("copying {rel} from the cached build: {e}"));
        binfarm::binpkg::sign_in_place(&dest, &key)
            .unwrap_or_else(|e| panic!("signing {rel}: {e}"));
        out.insert(rel, dest);
    }
    out
}

/// A "rebuild" of a package: the same contents under a new BUILD_ID, signed.
pub fn rebuilt(src: &Path, dir: &Path, build_id: u64) -> PathBuf {
    let name = src.file_name().unwrap().to_string_lossy().into_owned();
    let dest = dir.join(format!("rebuilt-{build_id}-{name}"));
    restamp_and_sign(src, &dest, build_id, &farm_key()).expect("restamping");
    dest
}

/// The test profile as the farm loads it.
pub fn profile() -> Profile {
    common::load_profile(PROFILE)
}

/// A farm state directory and mirror root under `dir`.
pub struct Farm {
    pub publisher: Publisher,
    pub db: Db,
    pub state_dir: PathBuf,
    pub mirror_root: PathBuf,
}

impl Farm {
    pub fn new(dir: &Path) -> Farm {
        let state_dir = dir.join("state");
        let mirror_root = dir.join("mirror");
        let store = Store::open(&state_dir).expect("opening the store");
        let db = store.connect().expect("connecting");
        Farm {
            publisher: Publisher::new(store, &mirror_root),
            db,
            state_dir,
            mirror_root,
        }
    }

    /// Stores a file as a binpkg blob; returns its digest.
    pub fn store(&mut self, file: &Path) -> String {
        let f = std::fs::File::open(file).unwrap();
        let stored = self
            .publisher
            .store
            .blobs()
            .put_stream(f, None, u64::MAX)
            .unwrap();
        self.db
            .record_blob(
                &stored.sha512,
                stored.size,
                "binpkg",
                binfarm::store::unix_now(),
            )
            .unwrap();
        stored.sha512
    }

    /// A snapshot of these files (stored first).
    pub fn snapshot(&mut self, files: &[&Path], now: i64) -> i64 {
        let blobs: Vec<String> = files.iter().map(|f| self.store(f)).collect();
        create_snapshot(
            &self.publisher,
            &mut self.db,
            &profile(),
            &blobs,
            &SnapshotOptions::default(),
            now,
        )
        .unwrap_or_else(|e| panic!("creating a snapshot: {e}"))
    }

    /// The tree directory of a channel.
    pub fn tree(&self, channel: &str) -> PathBuf {
        self.mirror_root.join(PROFILE).join(channel)
    }

    /// The state/mirror/profiles flags of the `binfarm` CLI for this farm.
    pub fn cli_args(&self) -> Vec<String> {
        vec![
            "--state-dir".into(),
            self.state_dir.to_string_lossy().into_owned(),
            "--mirror-root".into(),
            self.mirror_root.to_string_lossy().into_owned(),
            "--profiles-dir".into(),
            common::crate_root()
                .join("profiles")
                .to_string_lossy()
                .into_owned(),
        ]
    }
}

/// The `binfarm` binary of this build.
pub fn binfarm_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_binfarm"))
}

/// The sorted PATHs of a snapshot.
pub fn snapshot_paths(db: &Db, id: i64) -> Vec<String> {
    let mut paths: Vec<String> = db
        .snapshot_entries(id)
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    paths.sort();
    paths
}

// ----- a production node root (emerge from a mirror) -----

/// Runs emerge in the node root; returns (success, output).
pub fn emerge(node: &binfarm::worker::BuildRoot, args: &[&str]) -> (bool, String) {
    let out = node
        .portage_command("emerge", args, &[])
        .output()
        .expect("running emerge");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub fn emerge_ok(node: &binfarm::worker::BuildRoot, args: &[&str]) -> String {
    let (ok, text) = emerge(node, args);
    assert!(ok, "emerge {args:?} failed:\n{text}");
    text
}

/// The BUILD_ID of the installed `pf` (`app-misc/hello-1.0`) in the node root.
pub fn installed_build_id(node_root: &Path, pf: &str) -> Option<String> {
    std::fs::read_to_string(node_root.join("var/db/pkg").join(pf).join("BUILD_ID"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// After `stable` went back from B (hello build 2 + greeter) to A (hello build 1):
/// greeter is no longer offered and hello installs as build 1 again.
pub fn assert_node_sees_the_rollback(node: &binfarm::worker::BuildRoot, node_root: &Path) {
    let (ok, out) = emerge(
        node,
        &[
            "--getbinpkgonly",
            "--pretend",
            "--oneshot",
            "app-misc/greeter",
        ],
    );
    assert!(
        !ok,
        "greeter is not in stable after the rollback, yet:\n{out}"
    );
    let out = emerge_ok(node, &["--getbinpkgonly", "--oneshot", "app-misc/hello"]);
    assert_eq!(
        installed_build_id(node_root, "app-misc/hello-1.0").as_deref(),
        Some("1"),
        "{out}"
    );
}

/// hello as build 3, signed by the rogue key the node does not trust.
pub fn rogue_hello(pkgs: &BTreeMap<&'static str, PathBuf>, dir: &Path) -> PathBuf {
    let rogue = SigningKey::from_armored_file(&common::rogue_key().secret_key_file, None).unwrap();
    let path = dir.join("rogue-hello.gpkg.tar");
    restamp_and_sign(&pkgs[HELLO], &path, 3, &rogue).unwrap();
    path
}

/// With [`rogue_hello`] in stable, the node refuses it and keeps hello build 1.
pub fn assert_node_refuses_the_rogue_hello(node: &binfarm::worker::BuildRoot, node_root: &Path) {
    let (ok, out) = emerge(node, &["--getbinpkgonly", "--oneshot", "app-misc/hello"]);
    assert!(
        !ok,
        "a package signed by an untrusted key was installed:\n{out}"
    );
    assert_eq!(
        installed_build_id(node_root, "app-misc/hello-1.0").as_deref(),
        Some("1")
    );
}
