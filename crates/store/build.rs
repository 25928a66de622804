//! Embeds the migrations of `/migrations/{postgres,sqlite}` in the crate: writes
//! `$OUT_DIR/migrations.rs` with one `(version, description, include_str!(file))` per
//! `<VERSION>_<DESCRIPTION>.sql`, named and described as sqlx names them, so databases
//! migrated by any earlier build see the same versions and checksums. Done here rather than
//! with `sqlx::migrate!` so the binary needs no sqlx proc macro, whose build compiles both
//! database drivers (and SQLite's C source) a second time for the host.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut out = String::new();
    for backend in ["postgres", "sqlite"] {
        let dir = root.join(backend);
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .filter(|path| path.extension().is_some_and(|e| e == "sql"))
            .collect();
        files.sort();
        writeln!(
            out,
            "pub(crate) const {}: &[(i64, &str, &str)] = &[",
            backend.to_uppercase()
        )
        .unwrap();
        for path in files {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let (version, rest) = name
                .split_once('_')
                .unwrap_or_else(|| panic!("{name}: expected <VERSION>_<DESCRIPTION>.sql"));
            let version: i64 = version
                .parse()
                .unwrap_or_else(|_| panic!("{name}: the version is not an integer"));
            let description = rest.trim_end_matches(".sql").replace('_', " ");
            let path = path.canonicalize().expect("the migration's path");
            writeln!(
                out,
                "    ({version}, {description:?}, include_str!({:?})),",
                path.display().to_string()
            )
            .unwrap();
        }
        out.push_str("];\n");
    }
    let target = Path::new(&std::env::var("OUT_DIR").unwrap()).join("migrations.rs");
    std::fs::write(target, out).expect("write migrations.rs");
}
