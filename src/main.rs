//! The `kafka-store` binary: parse the command line, dispatch the command,
//! exit with the code its outcome maps to. Errors are printed once, on one
//! line.

use std::process::ExitCode;

use kafka_store::cli::{self, UsageError};
use kafka_store::commands;
use kafka_store::exit::{Exit, one_line};
use kafka_store::logging;

fn main() -> ExitCode {
    let exit = match run() {
        Ok(exit) => exit,
        Err(e) => {
            let exit = Exit::of(&e);
            if exit != Exit::Ok {
                eprintln!("kafka-store: {}", one_line(&e));
            }
            exit
        }
    };
    ExitCode::from(exit as u8)
}

fn run() -> anyhow::Result<Exit> {
    let args = cli::parse(std::env::args_os().skip(1))?;
    let level = args
        .log_level
        .or_else(|| std::env::var("KAFKA_STORE_LOG").ok())
        .unwrap_or_else(|| "info".into());
    logging::init(&level).map_err(|e| UsageError(format!("--log-level: {e}")))?;
    commands::dispatch(&args.command)
}
