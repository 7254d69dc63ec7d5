//! What the package installs beside the binary, generated from the same
//! command-line definition so it cannot drift: shell completions
//! (`memtrace completions SHELL`) and man pages (`memtrace manpages DIR`,
//! hidden: packaging runs it).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, CommandFactory};

use super::Cli;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManpagesArgs {
    /// Directory to write memtrace.1 and memtrace-SUBCOMMAND.1 into.
    pub dir: PathBuf,
}

pub fn completions(a: &CompletionsArgs) -> anyhow::Result<u8> {
    use std::io::Write;
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "memtrace", &mut out);
    match std::io::stdout().lock().write_all(&out) {
        // `| head` is not a failure.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("writing the completions"))
        }
        _ => Ok(0),
    }
}

pub fn manpages(a: &ManpagesArgs) -> anyhow::Result<u8> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let cmd = Cli::command();
    let mut pages = vec![("memtrace".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("memtrace-{}", sub.get_name());
        // The page's NAME and SYNOPSIS say `memtrace-agent`, as git's do.
        pages.push((
            name.clone(),
            sub.clone()
                .name(name)
                .version(crate::build_info::LONG_VERSION),
        ));
    }
    for (name, page) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(page)
            .source(format!("memtrace {}", crate::build_info::VERSION))
            .manual("memtrace manual")
            .render(&mut out)?;
        let path = a.dir.join(format!("{name}.1"));
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(0)
}
