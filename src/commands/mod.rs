//! The commands on top of the program: each `run(args) -> Result<Exit>`
//! opens what it needs (config, store, Kafka, index), does its work, and
//! says how the process ends. `dispatch` picks the command.

mod cat;
mod check;
mod locate;
mod ls;
mod reindex;
mod restore;
mod run;
mod signals;
mod source;
mod status;
mod verify;

use crate::cli::{Command, HELP};
use crate::exit::Exit;

/// Runs one command.
pub fn dispatch(command: &Command) -> anyhow::Result<Exit> {
    match command {
        Command::Help => {
            print!("{HELP}");
            Ok(Exit::Ok)
        }
        Command::Version => {
            println!("kafka-store {}", env!("CARGO_PKG_VERSION"));
            Ok(Exit::Ok)
        }
        Command::Run(args) => run::run(args),
        Command::Ls(args) => ls::run(args),
        Command::Cat(args) => cat::run(args),
        Command::Status(config) => status::run(config),
        Command::Check(config) => check::run(config),
        Command::Locate(args) => locate::run(args),
        Command::Reindex(config) => reindex::run(config),
        Command::Verify(args) => verify::run(args),
        Command::Restore(args) => restore::run(args),
    }
}
