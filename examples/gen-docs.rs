//! Writes the man page (`zibai.1`) and shell completions (bash, zsh, fish)
//! generated from the same clap definition as `zibai --help`, into the
//! directory given (default `target/docs`). Run by the packaging step:
//! `cargo run --example gen-docs -- DIR`.

use std::path::PathBuf;

use clap_complete::Shell;

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "target/docs".into()));
    std::fs::create_dir_all(&out)?;
    let cmd = zibai::config::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    std::fs::write(out.join("zibai.1"), page)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "zibai", &out)?;
    }
    println!("wrote {}", out.display());
    Ok(())
}
