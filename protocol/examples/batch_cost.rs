//! Builds and parses record batches the way a producer and the broker do, for instruction
//! counts under `valgrind --tool=callgrind` (repeatable on a noisy machine, unlike time):
//!
//! ```sh
//! cargo build --release -p defibus-protocol --example batch_cost
//! valgrind --tool=callgrind target/release/examples/batch_cost 200 64 1024
//! ```
//!
//! Arguments: batches, records per batch, value bytes (defaults 200, 64, 1024).

use protocol::record::{BATCH_LEN_MAX, BatchBuilder, BatchView, Record};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("batches, records per batch, value bytes"))
        .collect();
    let batches = args.first().copied().unwrap_or(200);
    let records = args.get(1).copied().unwrap_or(64);
    let value = vec![0x5a_u8; args.get(2).copied().unwrap_or(1024)];
    let mut parsed_records = 0u64;
    for _ in 0..batches {
        let mut builder = BatchBuilder::with_capacity(BATCH_LEN_MAX, records * (value.len() + 64));
        for _ in 0..records {
            builder
                .push(&Record {
                    value: &value,
                    ..Record::default()
                })
                .expect("a record fits");
        }
        let batch = builder.finish().expect("records were added");
        let view = BatchView::parse(&batch, BATCH_LEN_MAX).expect("a valid batch");
        parsed_records += u64::from(view.record_count());
    }
    println!("built and parsed {batches} batches, {parsed_records} records");
}
