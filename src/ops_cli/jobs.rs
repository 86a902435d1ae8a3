//! `contact-sync jobs …`: list, inspect, retry, discard and purge jobs.

use clap::builder::PossibleValuesParser;
use clap::ArgGroup;

use super::client::Api;
use super::format::{self, clip, opt};
use super::model::{Count, Job, Moved};
use super::table::Table;
use super::Target;
/// Queues the api serves; checked here so a typo fails before any request.
use crate::jobs::QUEUES;

/// Longest payload or error shown in a list cell; `jobs show` prints them
/// whole.
const CELL_WIDTH: usize = 72;

/// Job commands.
#[derive(clap::Subcommand, Debug)]
pub enum JobsCommand {
    /// List the jobs of a queue in one state, a page at a time.
    List {
        /// The queue.
        #[arg(long, value_parser = PossibleValuesParser::new(QUEUES))]
        queue: String,
        /// Which jobs.
        #[arg(long, value_enum)]
        state: JobState,
        /// Jobs to show, 1 to 500.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=500))]
        limit: u64,
        /// Jobs to skip.
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
    /// Show one job: payload, attempts and each failed attempt.
    Show {
        /// The job id.
        id: String,
    },
    /// Send dead jobs back with fresh attempts: one by id, or a queue's.
    #[command(group(ArgGroup::new("which").required(true).args(["id", "all"])))]
    Retry {
        /// The dead job.
        id: Option<String>,
        /// The queue whose dead jobs to retry (with `--all`).
        #[arg(long, requires = "all", value_parser = PossibleValuesParser::new(QUEUES))]
        queue: Option<String>,
        /// Retry every dead job of `--queue`.
        #[arg(long, requires = "queue")]
        all: bool,
        /// Only dead jobs whose last error contains this text.
        #[arg(long, requires = "all")]
        error_contains: Option<String>,
    },
    /// Discard one job that is not running.
    Discard {
        /// The job id.
        id: String,
    },
    /// Delete the finished (`done`) jobs of a queue.
    Purge {
        /// The queue.
        #[arg(long, value_parser = PossibleValuesParser::new(QUEUES))]
        queue: String,
        /// Only jobs finished more than this many seconds ago (default: all).
        #[arg(long)]
        older_than_secs: Option<u64>,
    },
}

/// Where a job is in its life.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Ready to run.
    Pending,
    /// Waiting for its run time (a delay or a backoff).
    Scheduled,
    /// Claimed by a worker.
    Running,
    /// Finished, kept for a while.
    Done,
    /// Out of attempts: waits for an operator.
    Dead,
}

impl JobState {
    /// The api's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Done => "done",
            Self::Dead => "dead",
        }
    }
}

/// Runs a `jobs` command against the api of `target`.
///
/// # Errors
/// The api's message when it refuses, or the URL it could not be reached at.
pub async fn jobs(target: &Target, cmd: JobsCommand) -> anyhow::Result<()> {
    let api = Api::new(target)?;
    match cmd {
        JobsCommand::List {
            queue,
            state,
            limit,
            offset,
        } => {
            let query = [
                ("state", state.as_str().to_owned()),
                ("limit", limit.to_string()),
                ("offset", offset.to_string()),
            ];
            let body = api.get(&["queues", &queue, "jobs"], &query).await?;
            api.print(&body, |jobs: Vec<Job>| {
                let what = format!("{} job", state.as_str());
                list(&jobs, &what, &queue, offset)
            })
        }
        JobsCommand::Show { id } => {
            let body = api.get(&["jobs", &id], &[]).await?;
            api.print(&body, |job: Job| show(&job))
        }
        JobsCommand::Retry { id: Some(id), .. } => {
            let body = api.post(&["jobs", &id, "retry"], &[]).await?;
            api.print(&body, |m: Moved| match m.retried {
                0 => format!("job {id} was not retried (no longer dead?)"),
                _ => format!("job {id} is back in its queue"),
            })
        }
        JobsCommand::Retry {
            queue: Some(queue),
            error_contains,
            ..
        } => {
            let query: Vec<_> = error_contains
                .iter()
                .map(|t| ("errorContains", t.clone()))
                .collect();
            let body = api
                .post(&["queues", &queue, "dead", "retry"], &query)
                .await?;
            let filter = error_contains
                .map(|t| format!(" with an error containing {t:?}"))
                .unwrap_or_default();
            api.print(&body, |m: Moved| {
                let n = format::count(m.retried, "dead job");
                format!("{n} of {queue}{filter} sent back")
            })
        }
        JobsCommand::Retry { .. } => anyhow::bail!("give a job id, or --queue Q --all"),
        JobsCommand::Discard { id } => {
            let body = api.delete(&["jobs", &id]).await?;
            api.print(&body, |_: Count| format!("job {id} discarded"))
        }
        JobsCommand::Purge {
            queue,
            older_than_secs,
        } => {
            let query: Vec<_> = older_than_secs
                .iter()
                .map(|s| ("olderThanSecs", s.to_string()))
                .collect();
            let body = api
                .post(&["queues", &queue, "done", "purge"], &query)
                .await?;
            api.print(&body, |c: Count| {
                let n = format::count(c.count, "done job");
                format!("{n} of {queue} purged")
            })
        }
    }
}

/// A page of jobs as a table, with a count line under it.
fn list(jobs: &[Job], what: &str, queue: &str, offset: u64) -> String {
    let now = format::now_ms();
    let mut t = Table::new(&["ID", "ATTEMPTS", "UPDATED", "WORKER", "PAYLOAD", "ERROR"])
        .right(&["ATTEMPTS"]);
    for j in jobs {
        t.row(vec![
            j.id.clone(),
            format!("{}/{}", j.attempts, j.max_attempts),
            format::ago_ms(j.updated_ms, now),
            opt(j.worker.as_deref()),
            clip(&format::payload(&j.payload), CELL_WIDTH),
            j.error
                .as_deref()
                .map_or_else(String::new, |e| clip(e, CELL_WIDTH)),
        ]);
    }
    let n = format::count(jobs.len() as u64, what);
    let footer = match (jobs.len(), offset) {
        (0, 0) => format!("no {what}s in {queue}"),
        (0, _) => format!("no {what}s in {queue} after the first {offset}"),
        (_, 0) => format!("{n} in {queue}"),
        (_, _) => format!("{n} in {queue}, from #{}", offset + 1),
    };
    format!("{t}{footer}")
}

/// One job in detail: fields, payload, then its failed attempts.
fn show(job: &Job) -> String {
    let now = format::now_ms();
    let payload =
        serde_json::to_string_pretty(&job.payload).unwrap_or_else(|_| job.payload.to_string());
    let mut out = format!(
        "id        {}\nqueue     {}\nstate     {}\nattempts  {} of {}\nworker    {}\ncreated   {}\nupdated   {}\nerror     {}\npayload   {}\n",
        job.id,
        job.queue,
        job.state,
        job.attempts,
        job.max_attempts,
        opt(job.worker.as_deref()),
        format::when_ms(job.created_ms, now),
        format::when_ms(job.updated_ms, now),
        opt(job.error.as_deref()),
        payload.replace('\n', "\n          "),
    );
    if job.failed_attempts.is_empty() {
        out.push_str("\nno failed attempts\n");
        return out;
    }
    let mut t = Table::new(&["#", "STARTED", "TOOK", "WORKER", "ERROR"]).right(&["#", "TOOK"]);
    for a in &job.failed_attempts {
        t.row(vec![
            a.attempt.to_string(),
            format::ago_ms(a.started_ms, now),
            format::duration(a.duration_ms),
            a.worker.clone(),
            clip(&a.error, 500),
        ]);
    }
    out.push_str(&format!("\nfailed attempts\n{t}"));
    out
}
