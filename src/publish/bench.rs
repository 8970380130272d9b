//! Publishing benchmark (`binfarm bench publish`): a 1,000-package snapshot published to a
//! local tree whose package files already exist (target: under 1 s).
//!
//! Setup (not timed): a temporary state directory with N small gpkgs written by
//! [`crate::binpkg::write_gpkg`], snapshot A of them published to `testing`, snapshot B with
//! 1% of the packages replaced. Timed, min of 3: publishing A again (every file present), and
//! moving the tree between A and B (index rewritten, the few new files linked).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::binpkg::{write_gpkg, GpkgSource, WriteOptions};
use crate::profile::Profile;
use crate::store::{unix_now, Store};

use super::channel::TESTING;
use super::local::publish_tree;
use super::snapshot::{create_snapshot, SnapshotOptions};
use super::{PublishError, Publisher};

const PROFILE_TOML: &str = r#"
name = "bench"
chost = "x86_64-pc-linux-gnu"
cflags = "-O2 -pipe -march=x86-64-v3"
cxxflags = "-O2 -pipe -march=x86-64-v3"
gentoo_profile = "bench:default"

[[repository]]
name = "bench"
location = "repo"
"#;

fn metadata(category: &str, pf: &str, build_id: u64) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    for (k, v) in [
        ("CATEGORY", category.to_string()),
        ("PF", pf.to_string()),
        ("SLOT", "0".to_string()),
        ("BUILD_ID", build_id.to_string()),
        ("BUILD_TIME", "1790000000".to_string()),
        ("EAPI", "8".to_string()),
        ("KEYWORDS", "amd64".to_string()),
        ("LICENSE", "MIT".to_string()),
        ("CHOST", "x86_64-pc-linux-gnu".to_string()),
        ("USE", "amd64".to_string()),
        ("DESCRIPTION", format!("benchmark package {pf}")),
        ("RDEPEND", "dev-libs/bench-base".to_string()),
        ("repository", "bench".to_string()),
    ] {
        m.insert(k.to_string(), format!("{v}\n").into_bytes());
    }
    m
}

/// Writes one small gpkg and stores it; returns its blob digest.
fn stored_package(
    publisher: &Publisher,
    db: &mut crate::store::Db,
    work: &Path,
    index: usize,
    version: u32,
) -> Result<String, PublishError> {
    let category = format!("bench-cat{}", index % 20);
    let pf = format!("pkg{index}-1.{version}");
    let image = work.join("image");
    let dest = work.join(format!("{pf}.gpkg.tar"));
    write_gpkg(
        &dest,
        &GpkgSource {
            top_dir: &format!("{pf}-1"),
            image_dir: &image,
            metadata: &metadata(&category, &pf, 1),
        },
        &WriteOptions {
            zstd_level: 1,
            zstd_threads: 1,
            signing_key: None,
            mtime: Some(1_790_000_000),
        },
    )?;
    let file = std::fs::File::open(&dest).map_err(PublishError::io(&dest))?;
    let stored = publisher.store.blobs().put_stream(file, None, u64::MAX)?;
    std::fs::remove_file(&dest).map_err(PublishError::io(&dest))?;
    db.record_blob(&stored.sha512, stored.size, "binpkg", unix_now())?;
    Ok(stored.sha512)
}

fn min_of<F: FnMut() -> Result<(), PublishError>>(
    runs: usize,
    mut f: F,
) -> Result<Duration, PublishError> {
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed());
    }
    Ok(best)
}

/// Runs the benchmark with `packages` packages; returns the report text.
pub fn bench_publish(packages: usize) -> Result<String, PublishError> {
    let work = tempfile::Builder::new()
        .prefix("binfarm-bench-publish-")
        .tempdir()
        .map_err(PublishError::io(&std::env::temp_dir()))?;
    let work = work.path();
    let image = work.join("image/usr/share/bench");
    std::fs::create_dir_all(&image).map_err(PublishError::io(&image))?;
    std::fs::write(image.join("data"), b"benchmark\n").map_err(PublishError::io(&image))?;
    std::fs::create_dir_all(work.join("repo")).map_err(PublishError::io(work))?;
    let profile = Profile::parse(&work.join("bench.toml"), PROFILE_TOML)?;

    let store = Store::open(&work.join("state"))?;
    let mut db = store.connect()?;
    let mut publisher = Publisher::new(store, work.join("mirror"));
    // Unsigned: signing is not what is measured, and key generation is not this module's.
    publisher.allow_unsigned = true;

    let setup = Instant::now();
    let mut blobs = Vec::with_capacity(packages);
    for i in 0..packages {
        blobs.push(stored_package(&publisher, &mut db, work, i, 0)?);
    }
    let now = unix_now();
    let a = create_snapshot(
        &publisher,
        &mut db,
        &profile,
        &blobs,
        &SnapshotOptions::default(),
        now,
    )?;
    let snapshot_a_time = setup.elapsed();
    let replaced = (packages / 100).max(1).min(packages);
    let mut blobs_b = blobs.clone();
    for (i, blob) in blobs_b.iter_mut().enumerate().take(replaced) {
        *blob = stored_package(&publisher, &mut db, work, i, 1)?;
    }
    let t = Instant::now();
    let b = create_snapshot(
        &publisher,
        &mut db,
        &profile,
        &blobs_b,
        &SnapshotOptions::default(),
        now,
    )?;
    let snapshot_b_time = t.elapsed();
    let first = Instant::now();
    publish_tree(&publisher, &mut db, &profile.name, TESTING, a, now)?;
    let first_publish = first.elapsed();

    let mut clock = now;
    let republish = min_of(3, || {
        clock += 1;
        publish_tree(&publisher, &mut db, &profile.name, TESTING, a, clock).map(|_| ())
    })?;
    let mut flip = false;
    let switch = min_of(3, || {
        clock += 1;
        flip = !flip;
        let id = if flip { b } else { a };
        publish_tree(&publisher, &mut db, &profile.name, TESTING, id, clock).map(|_| ())
    })?;
    let verdict = if republish < Duration::from_secs(1) && switch < Duration::from_secs(1) {
        "OK (< 1 s)"
    } else {
        "SLOW (target < 1 s)"
    };
    Ok(format!(
        "publish benchmark: {packages} packages\n\
         setup: {packages} gpkgs stored + snapshot A indexed in {snapshot_a_time:.2?}; \
         snapshot B ({replaced} packages replaced) indexed in {snapshot_b_time:.2?}\n\
         first publish of A (links every file): {first_publish:.2?}\n\
         publish A again, every file present (min of 3): {republish:.2?}\n\
         switch the tree A <-> B, {replaced} new files (min of 3): {switch:.2?}\n\
         {verdict}\n"
    ))
}
