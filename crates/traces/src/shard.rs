//! One Parquet shard of trace rows, with the column names and types of docs/contracts.md#the-distillation-traces-track. A shard is
//! written to `<name>.tmp` and renamed once closed and synced, so a killed collector leaves
//! either a whole shard or none.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int32Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float32Array, Int32Array, Int64Array, ListArray, RecordBatch, StringArray,
};
use arrow_schema::{Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

use crate::{io_err, Result, TraceError, TraceRow};

fn format_err(path: &Path, msg: impl std::fmt::Display) -> TraceError {
    TraceError::Format { path: path.to_path_buf(), msg: msg.to_string() }
}

fn batch(rows: &[TraceRow]) -> std::result::Result<RecordBatch, arrow_schema::ArrowError> {
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("prompt_idx", Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.prompt_idx)))),
        ("step_idx", Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.step_idx)))),
        ("teacher_sample_id", Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.teacher_sample_id)))),
        (
            "teacher_sample_text",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.teacher_sample_text.as_str()))),
        ),
        (
            "topk_ids",
            Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
                rows.iter().map(|r| Some(r.topk_ids.iter().map(|&v| Some(v)).collect::<Vec<_>>())),
            )),
        ),
        (
            "topk_logprobs",
            Arc::new(ListArray::from_iter_primitive::<Float32Type, _, _>(
                rows.iter().map(|r| Some(r.topk_logprobs.iter().map(|&v| Some(v)).collect::<Vec<_>>())),
            )),
        ),
        ("other_logprob", Arc::new(Float32Array::from_iter_values(rows.iter().map(|r| r.other_logprob)))),
        ("is_struct_token", Arc::new(BooleanArray::from(rows.iter().map(|r| r.is_struct_token).collect::<Vec<_>>()))),
        ("template_hash", Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.template_hash.as_str())))),
        ("tokenizer_hash", Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.tokenizer_hash.as_str())))),
    ];
    // The schema follows the arrays, so list item fields match what the builders made.
    let fields: Vec<Field> = columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), false)).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns.into_iter().map(|(_, a)| a).collect())
}

/// Writes `rows` as one shard at `path`, atomically (`atomic::replace_with`).
pub fn write_shard(path: &Path, rows: &[TraceRow]) -> Result<()> {
    let batch = batch(rows).map_err(|e| format_err(path, e))?;
    autoqat_workspace::atomic::replace_with(
        path,
        |tmp| {
            let file = File::create(tmp).map_err(io_err(tmp))?;
            let mut writer = ArrowWriter::try_new(file, batch.schema(), None).map_err(|e| format_err(tmp, e))?;
            writer.write(&batch).map_err(|e| format_err(tmp, e))?;
            writer.close().map_err(|e| format_err(tmp, e)).map(drop)
        },
        |p, e| io_err(p)(e),
    )
}

/// Reads every row of the shard at `path`.
pub fn read_shard(path: &Path) -> Result<Vec<TraceRow>> {
    let file = File::open(path).map_err(io_err(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| format_err(path, format!("not a readable Parquet file ({e}); delete it and collect again")))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| format_err(path, e))?;
        read_batch(path, &batch, &mut rows)?;
    }
    Ok(rows)
}

fn column<'a>(path: &Path, batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| format_err(path, format!("column `{name}` is missing; this is not an autoqat trace shard")))
}

fn read_batch(path: &Path, batch: &RecordBatch, out: &mut Vec<TraceRow>) -> Result<()> {
    let wrong = |name: &str| format_err(path, format!("column `{name}` has the wrong type"));
    let prompt =
        column(path, batch, "prompt_idx")?.as_primitive_opt::<Int64Type>().ok_or_else(|| wrong("prompt_idx"))?;
    let step = column(path, batch, "step_idx")?.as_primitive_opt::<Int32Type>().ok_or_else(|| wrong("step_idx"))?;
    let sample = column(path, batch, "teacher_sample_id")?
        .as_primitive_opt::<Int32Type>()
        .ok_or_else(|| wrong("teacher_sample_id"))?;
    let text = column(path, batch, "teacher_sample_text")?
        .as_string_opt::<i32>()
        .ok_or_else(|| wrong("teacher_sample_text"))?;
    let ids = column(path, batch, "topk_ids")?.as_list_opt::<i32>().ok_or_else(|| wrong("topk_ids"))?;
    let lps = column(path, batch, "topk_logprobs")?.as_list_opt::<i32>().ok_or_else(|| wrong("topk_logprobs"))?;
    let other = column(path, batch, "other_logprob")?
        .as_primitive_opt::<Float32Type>()
        .ok_or_else(|| wrong("other_logprob"))?;
    let is_struct = column(path, batch, "is_struct_token")?.as_boolean_opt().ok_or_else(|| wrong("is_struct_token"))?;
    let template =
        column(path, batch, "template_hash")?.as_string_opt::<i32>().ok_or_else(|| wrong("template_hash"))?;
    let tokenizer =
        column(path, batch, "tokenizer_hash")?.as_string_opt::<i32>().ok_or_else(|| wrong("tokenizer_hash"))?;
    for i in 0..batch.num_rows() {
        let id_list = ids.value(i);
        let lp_list = lps.value(i);
        let id_list = id_list.as_primitive_opt::<Int32Type>().ok_or_else(|| wrong("topk_ids"))?;
        let lp_list = lp_list.as_primitive_opt::<Float32Type>().ok_or_else(|| wrong("topk_logprobs"))?;
        if id_list.len() != lp_list.len() {
            return Err(format_err(path, format!("row {i}: topk_ids and topk_logprobs differ in length")));
        }
        out.push(TraceRow {
            prompt_idx: prompt.value(i),
            step_idx: step.value(i),
            teacher_sample_id: sample.value(i),
            teacher_sample_text: text.value(i).to_string(),
            topk_ids: id_list.values().to_vec(),
            topk_logprobs: lp_list.values().to_vec(),
            other_logprob: other.value(i),
            is_struct_token: is_struct.value(i),
            template_hash: template.value(i).to_string(),
            tokenizer_hash: tokenizer.value(i).to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(p: i64, s: i32, k: usize) -> TraceRow {
        TraceRow {
            prompt_idx: p,
            step_idx: s,
            teacher_sample_id: s * 3,
            teacher_sample_text: format!("tok{s}é"),
            topk_ids: (0..k as i32).collect(),
            topk_logprobs: (0..k).map(|i| -1.0 - i as f32).collect(),
            other_logprob: if k == 0 { f32::NAN } else { -2.5 },
            is_struct_token: s % 2 == 0,
            template_hash: "t".into(),
            tokenizer_hash: "h".into(),
        }
    }

    #[test]
    fn rows_round_trip_and_no_partial_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard-00000.parquet");
        let rows = vec![row(0, 0, 3), row(0, 1, 0), row(2, 0, 5)];
        write_shard(&path, &rows).unwrap();
        let back = read_shard(&path).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[0], rows[0]);
        assert_eq!(back[2], rows[2]);
        assert!(back[1].other_logprob.is_nan() && back[1].topk_ids.is_empty());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("shard-00000.parquet")]);
    }

    #[test]
    fn a_torn_file_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard-00000.parquet");
        std::fs::write(&path, b"PAR1 not really").unwrap();
        let err = read_shard(&path).unwrap_err().to_string();
        assert!(err.contains("shard-00000.parquet") && err.contains("collect again"), "{err}");
    }
}
