//! `spoor eval sessions` and `spoor eval baskets` on fixtures small enough to score by
//! hand, and the Online Retail converter.

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
    // Each simple method alone, on the same cases: sequential rules after `a` answer
    // [b, c] (b twice): a hit at 1 and one at 2.
    let rules = &report["components"]["sequential-rules"];
    assert_eq!(
        (rules["HR@2"].as_f64(), rules["MRR@2"].as_f64()),
        (Some(0.6667), Some(0.5))
    );
    for voice in ["repeat-first", "co-occurrence", "session-neighbours"] {
        assert!(report["components"][voice]["HR@2"].is_number(), "{report}");
    }
}

#[test]
fn eval_baskets_scores_a_tiny_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("baskets.csv");
    std::fs::write(
        &csv,
        "user,basket,item,timestamp\n\
         u1,1,a,100\nu1,1,b,100\nu1,2,a,200\nu1,2,c,200\n\
         u2,3,a,150\nu2,3,c,150\n\
         u3,4,b,120\nu3,5,b,300\n",
    )
    .unwrap();
    let output = run_ok(
        spoor()
            .args(["eval", "baskets", "--no-tune", "--k", "2", "--transactions"])
            .arg(&csv),
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["test_users"], 2, "u2 has one basket");
    assert_eq!(report["train_baskets"], 3);
    // personal: u1 (bought a, b) gets [a, b] (a bought again and bought with a elsewhere)
    // for {a, c}: recall 1/2, NDCG 1 / (1 + 1/log2 3) = 0.6131; u3 (bought b) gets
    // [b, a] for {b}: recall 1, NDCG 1.
    let personal = &report["next_basket"]["personal"];
    assert_eq!(personal["recall@2"], 0.75);
    assert_eq!(personal["NDCG@2"], 0.8066);
    // Bestsellers [a, b]: u1 as above; u3's b at rank 2: NDCG 1/log2 3 = 0.6309.
    let popular = &report["next_basket"]["components"]["popularity"];
    assert_eq!(popular["recall@2"], 0.75);
    assert_eq!(popular["NDCG@2"], 0.622);
    // Leave-one-out on u1's {a, c}: c -> [a], a -> [c, b] (c's basket is the more recent):
    // both at rank 1. Bestsellers: [a, b] without c, and [b, c] without a.
    let together = &report["bought_together"]["bought-together"];
    assert_eq!(
        (together["cases"].as_u64(), together["HR@2"].as_f64()),
        (Some(2), Some(1.0))
    );
    assert_eq!(together["MRR@2"], 1.0);
    assert_eq!(
        report["bought_together"]["components"]["popularity"]["MRR@2"],
        0.75
    );
    // Each simple method is printed beside the blend.
    for part in ["personal-frequency", "co-occurrence", "basket-neighbours"] {
        assert!(report["next_basket"]["components"][part]["recall@2"].is_number());
    }
    for voice in ["basket-neighbours", "co-occurrence"] {
        assert!(report["bought_together"]["components"][voice]["HR@2"].is_number());
    }
}

#[test]
fn online_retail_invoices_become_basket_rows() {
    let dir = tempfile::tempdir().unwrap();
    let invoices = dir.path().join("retail.csv");
    std::fs::write(
        &invoices,
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n\
         536365,85123A,HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom\n\
         536365,71053,LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom\n\
         C536379,D,Discount,-1,2010-12-01 09:41:00,27.5,14527.0,United Kingdom\n\
         536380,22961,JAM,0,2010-12-01 09:45:00,1.45,12345.0,France\n\
         536381,22139,GUEST,2,2010-12-01 09:50:00,4.95,,United Kingdom\n",
    )
    .unwrap();
    let output = run_ok(
        spoor()
            .args(["eval", "online-retail-baskets"])
            .arg(&invoices),
    );
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "user,basket,item,timestamp\n\
         17850,536365,85123A,1291191960\n\
         17850,536365,71053,1291191960\n"
    );
}
