//! `sluice-cni`: the CNI plugin binary (spec 1.0/1.1). Reads `CNI_*` and the configuration on
//! stdin, runs the command against sluiced (`sluice_cni`), prints the result or the
//! CNI error on stdout; exit code 0 or 1.
#![forbid(unsafe_code)]

use std::io::Read;
use std::process::ExitCode;

use sluice_cni::error::{CniError, IO_FAILURE};
use sluice_cni::{run, CniEnv};

fn main() -> ExitCode {
    let env = CniEnv::from_process();
    let mut stdin = Vec::new();
    // An unreadable stdin is the same as an empty one: the parser then reports a decode
    // failure for the commands that need a configuration.
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let outcome = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run(&env, &stdin)),
        Err(e) => Err(CniError::new(
            IO_FAILURE,
            "cannot start the I/O runtime",
            e.to_string(),
        )),
    };
    match outcome {
        Ok(out) => {
            if let Some(out) = out {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{}", e.to_json());
            ExitCode::FAILURE
        }
    }
}
