//! `crmsync-admin`: see the crate's library (`crmsync_admin`) and the README's "Operator command".

fn main() -> std::process::ExitCode {
    crmsync_admin::main()
}
