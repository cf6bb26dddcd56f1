//! Tunes next-item settings on the training sessions and scores them on a test file:
//! `eval_tune TRAIN TEST`.

use std::fs::File;
use std::io::BufReader;

use spoor_engine::eval::{
    read_cases, read_sessions, score_cases, stream_cases, train_on, tune_next_item,
};
use spoor_engine::recommend::Recommender;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sessions = read_sessions(BufReader::new(File::open(&args[0]).unwrap())).unwrap();
    let cases = read_cases(BufReader::new(File::open(&args[1]).unwrap())).unwrap();
    let (params, tuning) = tune_next_item(&sessions, 20);
    println!("{params:?}\n{tuning:?}");
    let mut recommender = Recommender::default();
    recommender.next_item = params;
    let now = train_on(&mut recommender, &sessions);
    let r = score_cases(&recommender, &cases, now, 20);
    println!("static: {r:?}");
    let m = stream_cases(&mut recommender, &cases, now, 20);
    println!(
        "streaming: HR {:.2} MRR {:.2}",
        m.hit_rate() * 100.0,
        m.mrr() * 100.0
    );
}
