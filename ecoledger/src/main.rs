use clap::Parser;
use ecoledger::cli::Cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    ecoledger::telemetry::init();
    let cli = Cli::parse();
    match cli.run().await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
