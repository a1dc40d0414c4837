//! `beamline-loadgen`: see `docs/loadgen.md` and `--help`.

use beamline_loadgen::args::Args;
use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.worker {
        return match beamline_loadgen::workers::run_worker().await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("beamline-loadgen worker: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let to_stdout = args.json.is_none();
    match beamline_loadgen::run(args).await {
        Ok(summary) => {
            if to_stdout {
                match serde_json::to_string_pretty(&summary) {
                    Ok(s) => println!("{s}"),
                    Err(e) => eprintln!("beamline-loadgen: {e}"),
                }
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("beamline-loadgen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
