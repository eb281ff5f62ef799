//! `focal gradcheck`: every op's hand-written backward against central finite
//! differences, one row per case.

use std::process::ExitCode;

use anyhow::{bail, Result};
use focal_engine::{gradcheck, Op};

#[derive(clap::Args)]
pub struct Args {
    /// Check only this op (for example conv2d, sigmoid_focal_loss). Default: all ops.
    #[arg(long, value_name = "NAME")]
    op: Option<String>,
    /// List the op names and exit.
    #[arg(long)]
    list: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    if args.list {
        for op in Op::ALL {
            println!("{}", op.name());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let op = match &args.op {
        None => None,
        Some(name) => match Op::from_name(name) {
            Some(op) => Some(op),
            None => {
                let names: Vec<&str> = Op::ALL.iter().map(|o| o.name()).collect();
                bail!("unknown op {name:?}; known ops: {}", names.join(", "));
            }
        },
    };
    let (table, reports) = gradcheck::run_table(op);
    print!("{table}");
    if let Some(op) = op {
        if reports.is_empty() {
            bail!("op {} has no gradient-check case", op.name());
        }
    }
    Ok(if reports.iter().all(|r| r.passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
