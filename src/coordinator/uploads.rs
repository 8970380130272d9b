//! Binpkg uploads: streamed into the blob store against the sha512 sent ahead, checked
//! (gpkg structure, no escaping names, CPV and profile match the step), then stored under
//! the farm's BUILD_ID and signed with the farm key. Nothing half-written is ever stored:
//! the blob store only renames complete, verified files into place.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use futures_util::TryStreamExt;

use super::protocol::{UploadReply, SHA512_HEADER};
use super::routes_worker::{authenticate, leased_step, LeaseQuery};
use super::{ApiError, Coordinator};
use crate::store::{BlobError, StepRow};

pub async fn upload(
    State(app): State<Arc<Coordinator>>,
    headers: HeaderMap,
    Path(step_id): Path<i64>,
    Query(query): Query<LeaseQuery>,
    body: Body,
) -> Result<Json<UploadReply>, ApiError> {
    let started = std::time::Instant::now();
    let result = store_upload(&app, &headers, step_id, query.lease, body).await;
    app.metrics
        .observe_upload(result.is_ok(), started.elapsed());
    result
}

async fn store_upload(
    app: &Arc<Coordinator>,
    headers: &HeaderMap,
    step_id: i64,
    lease: i64,
    body: Body,
) -> Result<Json<UploadReply>, ApiError> {
    let worker = authenticate(app, headers).await?;
    let step = leased_step(app, &worker, step_id, lease).await?;
    let expected = headers
        .get(SHA512_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| crate::store::is_sha512_hex(v))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "the {SHA512_HEADER} header (128 hex digits) must be sent ahead"
            ))
        })?;
    let max = app.config.queue.max_upload_bytes;
    let announced = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > max) {
        return Err(ApiError::TooLarge(format!(
            "upload of {} bytes is over max_upload_bytes ({max})",
            announced.unwrap_or(0)
        )));
    }

    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::StreamReader::new(stream);
    let blobs_app = app.clone();
    let received = tokio::task::spawn_blocking(move || {
        let bridge = tokio_util::io::SyncIoBridge::new(reader);
        blobs_app
            .store
            .blobs()
            .put_stream(bridge, Some(&expected), max)
    })
    .await
    .map_err(|e| ApiError::internal("upload task", e))?
    .map_err(|e| match e {
        BlobError::HashMismatch { .. } | BlobError::Read { .. } => {
            ApiError::BadRequest(e.to_string())
        }
        BlobError::TooLarge { .. } => ApiError::TooLarge(e.to_string()),
        other => ApiError::internal("storing the upload", other),
    })?;

    app.metrics.count_upload_bytes(received.size);
    let profile = app.profile(&step.profile)?;
    let check_app = app.clone();
    let stored = tokio::task::spawn_blocking(move || {
        check_and_sign(&check_app, &step, &profile, &received.sha512)
    })
    .await
    .map_err(|e| ApiError::internal("checking task", e))??;
    let now = crate::store::unix_now();
    let (sha, size) = (stored.blob.clone(), stored.size);
    app.with_db(move |db| db.record_blob(&sha, size, "binpkg", now))
        .await?;
    tracing::info!(
        "step {step_id}: stored {} ({} bytes, signed)",
        stored.path,
        stored.size
    );
    Ok(Json(stored))
}

/// Checks the unsigned upload, writes the farm's signed copy, stores it; the unsigned
/// bytes are dropped either way.
fn check_and_sign(
    app: &Coordinator,
    step: &StepRow,
    profile: &crate::profile::Profile,
    unsigned_sha512: &str,
) -> Result<UploadReply, ApiError> {
    let blobs = app.store.blobs();
    let unsigned = blobs
        .path_of(unsigned_sha512)
        .map_err(|e| ApiError::internal("blob path", e))?;
    let result = (|| {
        let pkg = crate::binpkg::read(&unsigned)
            .map_err(|e| ApiError::BadRequest(format!("rejected binpkg: {e}")))?;
        if pkg.format != crate::binpkg::Format::Gpkg {
            return Err(ApiError::BadRequest(
                "rejected binpkg: xpak cannot be signed; the profile must build gpkg".into(),
            ));
        }
        let category = pkg.metadata.get("CATEGORY").unwrap_or("");
        let pf = pkg.metadata.get("PF").unwrap_or("");
        let cpv = format!("{category}/{pf}");
        if cpv != step.cpv {
            return Err(ApiError::BadRequest(format!(
                "rejected binpkg: it is {cpv}, step {} builds {}",
                step.id, step.cpv
            )));
        }
        for (key, want) in [("CHOST", &profile.chost), ("CFLAGS", &profile.cflags)] {
            let got = pkg.metadata.get(key).unwrap_or("").trim();
            if got != want.trim() {
                return Err(ApiError::BadRequest(format!(
                    "rejected binpkg: {key} is {got:?}, profile {} builds with {want:?}",
                    profile.name
                )));
            }
        }
        let build_id = step.build_id.ok_or_else(|| {
            ApiError::Internal(format!("step {} has no BUILD_ID reserved", step.id))
        })?;
        let build_id_u64 = u64::try_from(build_id)
            .map_err(|_| ApiError::Internal(format!("bad BUILD_ID {build_id}")))?;
        // Not in the blob store's tmp/ (whose stale files any store opener removes).
        let signing_dir = app.config.state.dir.join("signing");
        std::fs::create_dir_all(&signing_dir).map_err(|e| ApiError::internal("signing dir", e))?;
        let temp = tempfile::Builder::new()
            .prefix("signing-")
            .suffix(".gpkg.tar")
            .tempfile_in(&signing_dir)
            .map_err(|e| ApiError::internal("temp file", e))?;
        crate::binpkg::restamp_and_sign(&unsigned, temp.path(), build_id_u64, &app.signing_key)
            .map_err(|e| ApiError::internal("signing", e))?;
        let signed_file =
            std::fs::File::open(temp.path()).map_err(|e| ApiError::internal("signed copy", e))?;
        let signed = blobs
            .put_stream(signed_file, None, u64::MAX)
            .map_err(|e| ApiError::internal("storing signed copy", e))?;
        Ok(UploadReply {
            blob: signed.sha512,
            size: signed.size,
            path: crate::store::binhost_path(&step.cpv, build_id),
        })
    })();
    let _ = blobs.remove(unsigned_sha512);
    result
}
