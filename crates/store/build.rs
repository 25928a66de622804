//! `sqlx::migrate!` embeds the migration files at compile time, but cargo
//! does not know to rebuild this crate when one is added: tell it.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
