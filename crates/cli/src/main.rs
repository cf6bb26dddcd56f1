//! `spoor`: a self-hosted drop-in for a website-behaviour tracker's REST API.

mod busy;
mod contacts;
mod data_dir;
mod demo;
mod eval;
mod events;
mod feed;
mod http;
mod load;
mod serve;
mod state;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

// Every request allocates many short-lived strings and maps across threads: mimalloc
// serves that pattern with less CPU per request than glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "spoor",
    version,
    about = "Self-hosted website-behaviour tracker: takes the tracker REST API's events unchanged \
             and keeps them in a durable embedded log.",
    after_help = "Try it with `spoor demo`: a demo shop with spoor's blocks on its pages. Serve a \
                  shop with `spoor serve --site 8A412DC`, then POST events to \
                  http://127.0.0.1:8080/api/v2. Each subcommand has its own --help."
)]
struct Cli {
    /// Log format: `plain` for people, `json` for log collectors.
    #[arg(long, global = true, env = "SPOOR_LOG_FORMAT", default_value = "plain")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: the tracker API on /api/v2, administration on /admin/v1.
    Serve(serve::ServeArgs),
    /// Read the event log out, or load an export back in.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// A person's data: export everything held, or erase it (through a running server).
    #[command(subcommand)]
    Contacts(contacts::ContactsCommand),
    /// Product feeds: import one into a running server.
    #[command(subcommand)]
    Feed(feed::FeedCommand),
    /// The state derived from the log: rebuild it offline and print its digest.
    #[command(subcommand)]
    State(state::StateCommand),
    /// Offline evaluation of the recommenders on public data sets.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Try spoor: a demo shop on its own port, with spoor's blocks on its pages.
    Demo(demo::DemoArgs),
    /// Load a public data set into a running server, through its tracker API.
    #[command(subcommand)]
    Load(LoadCommand),
}

#[derive(Subcommand)]
enum LoadCommand {
    /// UCI Online Retail (a UK gift shop's invoices, 2010-2011): the catalogue, customers,
    /// carts and purchases, as the shop's site would have sent them.
    OnlineRetail {
        /// online_retail.csv or online_retail.csv.gz
        file: PathBuf,
        /// The running server.
        #[arg(long, env = "SPOOR_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The site to load into; it must be registered.
        #[arg(long)]
        site: String,
    },
}

fn init_tracing(format: LogFormat) {
    // Verbosity from SPOOR_LOG (or RUST_LOG), e.g. `SPOOR_LOG=debug`; info by default.
    let filter = tracing_subscriber::EnvFilter::try_from_env("SPOOR_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // A log line that cannot be written (stderr on a full disk) is lost, and the server
        // goes on: the default reports it with `eprintln!`, which panics when stderr fails,
        // and the panic's own log line then aborts the process.
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    // A panic is logged like everything else, where it happened; its message only when it
    // is fixed text, since a formatted one may quote what a request carried.
    std::panic::set_hook(Box::new(|info| {
        let message = (info.payload().downcast_ref::<&'static str>().copied())
            .unwrap_or("(a formatted message, not logged)");
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            location = %info.location().map_or_else(String::new, ToString::to_string),
            panic = message,
            "panicked"
        );
    }));
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve::run(args)),
        Command::Demo(args) => runtime.block_on(demo::run(args)),
        Command::Events(command) => runtime.block_on(events::run(command)),
        Command::Contacts(command) => runtime.block_on(contacts::run(command)),
        Command::Feed(command) => runtime.block_on(feed::run(command)),
        Command::State(command) => runtime.block_on(state::run(command)),
        Command::Eval(command) => eval::run(command),
        Command::Load(LoadCommand::OnlineRetail { file, url, site }) => {
            runtime.block_on(load::online_retail(&file, &url, &site))
        }
    }
}
