//! `spoor eval sessions` on a fixture small enough to score by hand.

mod common;

use common::{run_ok, spoor};

#[test]
fn eval_sessions_scores_a_tiny_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.txt");
    let test = dir.path().join("test.tsv");
    std::fs::write(&train, "a b\na b\na c\n").unwrap();
    std::fs::write(&test, "a\tb\na\tc\na\td\n").unwrap();
    let output = run_ok(
        spoor()
            .args(["eval", "sessions", "--no-tune", "--k", "2"])
            .args([
                "--train".as_ref(),
                train.as_os_str(),
                "--test".as_ref(),
                test.as_os_str(),
            ]),
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // After `a`, the model answers [a, b] (a viewed again by every neighbour, b next in
    // two of three): b is a hit at rank 2, c and d are misses.
    assert_eq!(report["test_cases"], 3);
    assert_eq!(report["HR@2"], 0.3333);
    assert_eq!(report["MRR@2"], 0.1667);
    assert_eq!(report["NDCG@2"], 0.2103);
    assert_eq!(report["train_sessions"], 3);
}
