//! The local-directory backend.

use byok_video_store::{VideoStore, VideoStoreConfig};
use uuid::Uuid;

use crate::support::{assert_pattern, pattern, read_all, source_file};

fn store(dir: &std::path::Path) -> VideoStore {
    VideoStore::open(&VideoStoreConfig::new(format!("file://{}", dir.display()))).expect("open")
}

#[tokio::test]
async fn put_file_then_get_returns_the_same_bytes() {
    let root = tempfile::tempdir().unwrap();
    // Created on demand: the directory does not exist yet.
    let dir = root.path().join("videos/out");
    let store = store(&dir);
    let (_src, path) = source_file(300_000);
    let job = Uuid::new_v4();

    let stored = store
        .put_file(job, &path, "video/mp4")
        .await
        .expect("stored");
    assert_eq!(stored, 300_000);
    // The layout of existing installs: <dir>/<job id>.mp4, and no temporary file left.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [format!("{job}.mp4")]);

    let video = store.get(job).await.expect("get").expect("a video");
    assert_eq!(video.size, 300_000);
    assert_eq!(read_all(video).await.unwrap(), pattern(300_000));
    assert_eq!(
        store.presigned_url(job).await.unwrap(),
        None,
        "a directory cannot presign"
    );
}

#[tokio::test]
async fn a_second_put_replaces_the_video() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let job = Uuid::new_v4();
    let (_a, first) = source_file(10);
    let (_b, second) = source_file(2_000_000);
    store.put_file(job, &first, "video/mp4").await.unwrap();
    store.put_file(job, &second, "video/mp4").await.unwrap();
    assert_pattern(store.get(job).await.unwrap().unwrap(), 2_000_000).await;
}

#[tokio::test]
async fn videos_of_existing_installs_are_found() {
    // A video written by an earlier byok (`<output.dir>/<job id>.mp4`), with a bare path.
    let dir = tempfile::tempdir().unwrap();
    let job = Uuid::new_v4();
    std::fs::write(dir.path().join(format!("{job}.mp4")), b"an old video").unwrap();
    let store = VideoStore::open(&VideoStoreConfig::new(dir.path().to_string_lossy())).unwrap();
    let video = store.get(job).await.unwrap().expect("found");
    assert_eq!(read_all(video).await.unwrap(), b"an old video");
}

#[tokio::test]
async fn a_missing_video_is_none() {
    let root = tempfile::tempdir().unwrap();
    // Neither the video nor the directory exists.
    let store = store(&root.path().join("never-created"));
    assert!(store.get(Uuid::new_v4()).await.expect("no error").is_none());
    store.ping().await.expect("ping creates the directory");
    assert!(root.path().join("never-created").is_dir());
    assert!(store.get(Uuid::new_v4()).await.expect("no error").is_none());
}

#[tokio::test]
async fn a_missing_source_file_is_a_permanent_error_of_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let missing = dir.path().join("nothing-here.mp4");
    let err = store
        .put_file(Uuid::new_v4(), &missing, "video/mp4")
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("nothing-here.mp4"), "{err}");
}

#[tokio::test]
async fn an_unwritable_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the directory should be.
    let blocker = dir.path().join("videos");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let store = store(&blocker);
    let (_src, path) = source_file(100);
    let err = store
        .put_file(Uuid::new_v4(), &path, "video/mp4")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("videos"), "{err}");
    assert!(store.ping().await.is_err());
}

#[cfg(unix)]
#[tokio::test]
async fn stored_videos_take_the_umasks_permissions_not_the_sources() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let (_src, path) = source_file(100);
    // A download in a private temporary file.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let job = Uuid::new_v4();
    store.put_file(job, &path, "video/mp4").await.unwrap();
    // A file created fresh in the directory shows what the umask gives.
    let probe = dir.path().join("probe");
    std::fs::write(&probe, b"").unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join(format!("{job}.mp4"))), mode(&probe));
}

#[tokio::test]
async fn a_file_written_in_the_scratch_dir_is_moved_into_place_not_copied() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let scratch = store
        .scratch_dir()
        .expect("a local store has one")
        .to_owned();
    assert_eq!(scratch, dir.path().canonicalize().unwrap());
    let job = Uuid::new_v4();
    let download = scratch.join(format!(".{job}.download.partial"));
    std::fs::write(&download, pattern(70_000)).unwrap();
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&download).unwrap());

    assert_eq!(
        store.put_file(job, &download, "video/mp4").await.unwrap(),
        70_000
    );
    assert!(!download.exists(), "moved, so nothing is left to clean up");
    let stored = scratch.join(format!("{job}.mp4"));
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&stored).unwrap()),
        inode,
        "the same file, renamed: no copy"
    );
    let video = store.get(job).await.unwrap().expect("a video");
    assert_eq!(read_all(video).await.unwrap(), pattern(70_000));
}
