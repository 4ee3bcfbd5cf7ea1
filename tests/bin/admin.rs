//! `crmsync-admin` as the tests run it in a process of its own (tests/integration/parts/admin.rs):
//! the same entry point as `infra/admin`'s binary, built as a binary of this package so the tests can
//! find it (`CARGO_BIN_EXE_*` names only a test's own package's binaries).

fn main() -> std::process::ExitCode {
    crmsync_admin::main()
}
