//! The engine side of the server: one thread runs the [`qkv::Scheduler`] loop (decoder-only models), or groups
//! concurrent translation requests into one `translate` call (encoder-decoder models). Handlers talk to it over
//! channels and never run the model on the tokio runtime.

use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qkv::{BatchEvent, BatchOptions, GenerateOptions, Generation, Model, SeqId, TokenEvent, TranslateOptions};
use tokio::sync::{mpsc as tmpsc, oneshot};

use super::metrics::Metrics;

/// What the engine sends back about one generation.
#[derive(Debug)]
pub enum Msg {
    Token(TokenEvent),
    Done(Generation),
    Failed(String),
}

/// A generation to run: the prompt ids, its options, and where its events go (dropping the receiver cancels it
/// and frees its row at the next step).
pub struct Submit {
    pub prompt: Vec<u32>,
    pub opts: GenerateOptions,
    pub out: tmpsc::UnboundedSender<Msg>,
}

/// The handle handlers use to reach the generation thread.
#[derive(Clone)]
pub struct Generate {
    tx: mpsc::Sender<Submit>,
}

impl Generate {
    /// Start the scheduler thread; an error if the scheduler cannot be made (its cache does not fit).
    pub fn start(model: Arc<Model>, batch: BatchOptions, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel::<Submit>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        std::thread::Builder::new()
            .name("qkv-scheduler".into())
            .spawn(move || scheduler_loop(&model, batch, &metrics, &rx, &ready_tx))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self { tx }),
            Ok(Err(e)) => anyhow::bail!("cannot start the scheduler: {e}"),
            Err(_) => anyhow::bail!("the scheduler thread ended at start"),
        }
    }

    /// Queue a generation; `false` if the engine has stopped.
    pub fn submit(&self, s: Submit) -> bool {
        self.tx.send(s).is_ok()
    }
}

/// The scheduler thread: admit submissions, step the batch, route events; cancel the sequences whose client went
/// away. Ends when every handle is dropped and the batch is empty (a drained shutdown).
fn scheduler_loop(
    model: &Model,
    batch: BatchOptions,
    metrics: &Metrics,
    rx: &mpsc::Receiver<Submit>,
    ready: &mpsc::Sender<Result<(), String>>,
) {
    let mut sched = match model.scheduler(batch) {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let mut outs: HashMap<SeqId, tmpsc::UnboundedSender<Msg>> = HashMap::new();
    let mut open = true;
    loop {
        // Wait for work when there is none.
        if sched.is_idle() {
            if !open {
                return;
            }
            match rx.recv() {
                Ok(s) => admit(&mut sched, &mut outs, s),
                Err(_) => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(s) => admit(&mut sched, &mut outs, s),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        // Clients that went away (disconnected, timed out) while queued or running.
        outs.retain(|&seq, out| {
            let gone = out.is_closed();
            if gone {
                sched.cancel(seq);
            }
            !gone
        });
        match sched.step() {
            Ok(events) => {
                for ev in events {
                    match ev {
                        BatchEvent::Token { seq, event } => {
                            metrics.generated_tokens.inc();
                            let sent = outs.get(&seq).is_some_and(|o| o.send(Msg::Token(event)).is_ok());
                            if !sent {
                                sched.cancel(seq);
                                outs.remove(&seq);
                            }
                        }
                        BatchEvent::Done { seq, generation } => {
                            if let Some(o) = outs.remove(&seq) {
                                let _ = o.send(Msg::Done(generation));
                            }
                        }
                    }
                }
            }
            Err(e) => {
                // A step the model refused (nothing was written): every sequence of the batch fails with it.
                for (seq, o) in outs.drain() {
                    sched.cancel(seq);
                    let _ = o.send(Msg::Failed(e.to_string()));
                }
            }
        }
        metrics.running.set(sched.running() as i64);
        metrics.queue_depth.set(sched.waiting() as i64);
    }
}

fn admit(sched: &mut qkv::Scheduler<'_>, outs: &mut HashMap<SeqId, tmpsc::UnboundedSender<Msg>>, s: Submit) {
    if s.out.is_closed() {
        return;
    }
    match sched.submit(s.prompt, &s.opts) {
        Ok(seq) => {
            outs.insert(seq, s.out);
        }
        Err(e) => {
            let _ = s.out.send(Msg::Failed(e.to_string()));
        }
    }
}

/// One translation request: its sources and beam size, and where the results go.
pub struct TranslateJob {
    pub texts: Vec<String>,
    pub opts: TranslateOptions,
    pub out: oneshot::Sender<Result<Vec<qkv::Translation>, String>>,
}

/// How translation requests are grouped.
#[derive(Clone, Copy, Debug)]
pub struct Grouping {
    /// Most sources of one `translate` call.
    pub max_sources: usize,
    /// How long the first request of a group waits for others.
    pub wait: Duration,
}

/// The handle handlers use to reach the translation thread.
#[derive(Clone)]
pub struct Translate {
    tx: mpsc::Sender<TranslateJob>,
}

impl Translate {
    pub fn start(model: Arc<Model>, grouping: Grouping, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel::<TranslateJob>();
        std::thread::Builder::new()
            .name("qkv-translate".into())
            .spawn(move || translate_loop(&model, grouping, &metrics, &rx))?;
        Ok(Self { tx })
    }

    pub fn submit(&self, job: TranslateJob) -> bool {
        self.tx.send(job).is_ok()
    }
}

/// Collect requests for up to `grouping.wait` after the first (or until `max_sources`), translate each set of
/// requests with the same options in one call, and hand every request its own results.
fn translate_loop(model: &Model, grouping: Grouping, metrics: &Metrics, rx: &mpsc::Receiver<TranslateJob>) {
    while let Ok(first) = rx.recv() {
        let deadline = Instant::now() + grouping.wait;
        let mut n = first.texts.len();
        let mut group = vec![first];
        while n < grouping.max_sources {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(job) => {
                    n += job.texts.len();
                    group.push(job);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        // One call per distinct options, in arrival order.
        while !group.is_empty() {
            let opts = group[0].opts.clone();
            let (same, rest): (Vec<_>, Vec<_>) = group.into_iter().partition(|j| j.opts == opts);
            group = rest;
            let same: Vec<TranslateJob> = same.into_iter().filter(|j| !j.out.is_closed()).collect();
            let texts: Vec<&str> = same.iter().flat_map(|j| j.texts.iter().map(String::as_str)).collect();
            if texts.is_empty() {
                continue;
            }
            metrics.translate_batch.observe(texts.len() as f64);
            match model.translate(&texts, &opts) {
                Ok(all) => {
                    let mut all = all.into_iter();
                    for j in same {
                        let mine: Vec<_> = all.by_ref().take(j.texts.len()).collect();
                        let _ = j.out.send(Ok(mine));
                    }
                }
                // One bad source fails the call: translate each request alone so only its own fails.
                Err(_) => {
                    for j in same {
                        let refs: Vec<&str> = j.texts.iter().map(String::as_str).collect();
                        let _ = j.out.send(model.translate(&refs, &opts).map_err(|e| e.to_string()));
                    }
                }
            }
        }
    }
}
