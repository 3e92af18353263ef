//! Provider tests against a real HTTP server on 127.0.0.1 that speaks both the OpenAI chat
//! completions and the Anthropic Messages APIs, and the `command` provider with a script.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use autoqat_research::answer;
use autoqat_research::proposer::{self, ProposerError, Reply, Request};
use autoqat_research::settings::ProviderSettings;
use common::*;

fn settings(kind: &str, url: &str, var: &str) -> ProviderSettings {
    ProviderSettings {
        kind: kind.into(),
        model: "test-model".into(),
        base_url: url.into(),
        api_key_env: var.into(),
        timeout_s: 2.0,
        max_retries: 2,
        backoff_s: 0.01,
        max_backoff_s: 5.0,
        price_in_per_mtok: 2.0,
        price_out_per_mtok: 10.0,
        ..ProviderSettings::default()
    }
}

/// The request every provider test sends.
fn request(tried: &HashSet<String>) -> Request<'_> {
    bare_request("sys", "user prompt", RECIPE, tried)
}

fn ask(s: &ProviderSettings) -> Result<Reply, ProposerError> {
    let mut p = proposer::make(s)?;
    let tried = HashSet::new();
    p.propose(&request(&tried))
}

/// Each test gets its own env var, so tests running in parallel never race on one name.
fn key(var: &str, value: &str) {
    std::env::set_var(var, value);
}

const GOOD: &str = r#"{"description":"raise lr","rationale":"r","edits":[{"path":"experiments/train.toml","search":"lr = 0.001","replace":"lr = 0.003"}]}"#;

#[test]
fn openai_good_answer_sends_key_model_and_prices_tokens() {
    let srv = serve(vec![Canned::json(200, openai_body(GOOD))]);
    key("AQ_T_OPENAI_GOOD", "fake-test-openai-good");
    let r = ask(&settings("openai", &format!("{}/v1", srv.url), "AQ_T_OPENAI_GOOD")).unwrap();
    assert_eq!(answer::parse(&r.text).unwrap().description, "raise lr");
    assert_eq!((r.input_tokens, r.output_tokens), (1000, 200));
    // 1000 * 2 / 1e6 + 200 * 10 / 1e6
    assert!((r.cost_usd - 0.004).abs() < 1e-12, "{}", r.cost_usd);
    let seen = srv.seen.lock().unwrap();
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert!(seen[0].headers.contains(&("authorization".into(), "Bearer fake-test-openai-good".into())));
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["messages"][1]["content"], "user prompt");
}

#[test]
fn anthropic_good_answer_uses_messages_api() {
    let srv = serve(vec![Canned::json(200, anthropic_body(GOOD))]);
    key("AQ_T_ANTHROPIC_GOOD", "fake-ant-test");
    let r = ask(&settings("anthropic", &srv.url, "AQ_T_ANTHROPIC_GOOD")).unwrap();
    assert_eq!(answer::parse(&r.text).unwrap().edits.len(), 1);
    assert_eq!((r.input_tokens, r.output_tokens), (900, 100));
    let seen = srv.seen.lock().unwrap();
    assert_eq!(seen[0].path, "/v1/messages");
    assert!(seen[0].headers.contains(&("x-api-key".into(), "fake-ant-test".into())));
    assert!(seen[0].headers.iter().any(|(k, _)| k == "anthropic-version"));
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body["system"], "sys");
}

#[test]
fn retry_after_on_429_is_honoured() {
    let mut busy = Canned::json(429, r#"{"error":"rate limited"}"#);
    busy.headers.push(("retry-after".into(), "1".into()));
    let srv = serve(vec![busy, Canned::json(200, anthropic_body(GOOD))]);
    key("AQ_T_429", "k-429-xxxx");
    let t = Instant::now();
    let r = ask(&settings("anthropic", &srv.url, "AQ_T_429")).unwrap();
    assert!(answer::parse(&r.text).is_ok());
    let seen = srv.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    // backoff_s is 0.01: only Retry-After explains a gap of a second.
    let gap = seen[1].at.duration_since(seen[0].at);
    assert!(gap >= Duration::from_millis(950), "waited only {gap:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn server_error_then_success() {
    let srv = serve(vec![Canned::json(500, "oops"), Canned::json(503, "busy"), Canned::json(200, openai_body(GOOD))]);
    key("AQ_T_500", "k-500-xxxx");
    let r = ask(&settings("openai", &srv.url, "AQ_T_500")).unwrap();
    assert!(answer::parse(&r.text).is_ok());
    assert_eq!(srv.seen.lock().unwrap().len(), 3);
}

#[test]
fn server_errors_exhaust_retries_with_a_clear_error() {
    let srv = serve(vec![Canned::json(500, "a"), Canned::json(500, "b"), Canned::json(500, "c")]);
    key("AQ_T_500X", "k-500x-xxxx");
    let e = ask(&settings("openai", &srv.url, "AQ_T_500X")).unwrap_err().to_string();
    assert!(e.contains("giving up after 3 attempts") && e.contains("500"), "{e}");
}

#[test]
fn a_hung_request_times_out_and_is_retried() {
    let mut slow = Canned::json(200, openai_body(GOOD));
    slow.delay = Duration::from_millis(1500);
    let srv = serve(vec![slow, Canned::json(200, openai_body(GOOD))]);
    key("AQ_T_TIMEOUT", "k-timeout-xxxx");
    let mut s = settings("openai", &srv.url, "AQ_T_TIMEOUT");
    s.timeout_s = 0.4;
    let t = Instant::now();
    let r = ask(&s).unwrap();
    assert!(answer::parse(&r.text).is_ok());
    assert_eq!(srv.seen.lock().unwrap().len(), 2);
    assert!(t.elapsed() < Duration::from_millis(1400), "timeout not applied: {:?}", t.elapsed());
}

#[test]
fn truncated_json_body_is_retried_then_reported() {
    let full = openai_body(GOOD);
    let cut = full[..full.len() / 2].to_string();
    let srv = serve(vec![Canned::json(200, cut.clone()), Canned::json(200, full)]);
    key("AQ_T_TRUNC", "k-trunc-xxxx");
    assert!(ask(&settings("openai", &srv.url, "AQ_T_TRUNC")).is_ok());

    let srv = serve(vec![Canned::json(200, cut.clone()), Canned::json(200, cut)]);
    let mut s = settings("openai", &srv.url, "AQ_T_TRUNC");
    s.max_retries = 1;
    let e = ask(&s).unwrap_err().to_string();
    assert!(e.contains("not valid JSON"), "{e}");
}

#[test]
fn truncated_answer_content_is_rejected_as_unparsable() {
    let srv = serve(vec![Canned::json(200, openai_body(&GOOD[..GOOD.len() - 20]))]);
    key("AQ_T_TRUNC2", "k-trunc2-xxxx");
    let r = ask(&settings("openai", &srv.url, "AQ_T_TRUNC2")).unwrap();
    let e = answer::parse(&r.text).unwrap_err();
    assert!(e.contains("JSON"), "{e}");
}

#[test]
fn prose_and_fence_wrapped_answers_parse() {
    let wrapped = format!("Sure. Looking at the results, lr is too low.\n\n```json\n{GOOD}\n```\n\nLet me know.");
    let srv = serve(vec![Canned::json(200, anthropic_body(&wrapped))]);
    key("AQ_T_PROSE", "k-prose-xxxx");
    let r = ask(&settings("anthropic", &srv.url, "AQ_T_PROSE")).unwrap();
    assert_eq!(answer::parse(&r.text).unwrap().description, "raise lr");
    // Bare JSON in prose, with braces inside strings.
    let bare = r#"I propose {"description":"x {y}","rationale":"}","edits":[{"path":"a","search":"b","replace":"c"}]} as said."#;
    assert_eq!(answer::parse(bare).unwrap().description, "x {y}");
}

#[test]
fn client_errors_fail_fast_and_never_echo_the_key() {
    let secret = "fake-LEAKCANARY-0xDEADBEEF-401";
    let srv = serve(vec![Canned::json(401, format!(r#"{{"error":"invalid key {secret}"}}"#))]);
    key("AQ_T_401", secret);
    let e = ask(&settings("openai", &srv.url, "AQ_T_401")).unwrap_err();
    let msg = format!("{e} {e:?}");
    assert!(msg.contains("401"), "{msg}");
    assert!(!msg.contains(secret), "key leaked into the error: {msg}");
    assert_eq!(srv.seen.lock().unwrap().len(), 1, "a 401 must not be retried");
}

#[test]
fn missing_key_names_the_variable() {
    let e = ask(&settings("openai", "http://127.0.0.1:9", "AQ_T_UNSET_VAR_NAME")).unwrap_err().to_string();
    assert!(e.contains("AQ_T_UNSET_VAR_NAME"), "{e}");
}

#[test]
fn command_provider_reads_prompt_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("agent.sh");
    // Echo back whether the prompt arrived, inside a valid answer.
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif grep -q 'user prompt'; then echo 'Here you go:'; echo '{GOOD}'; else echo nothing; fi\n"
        ),
    )
    .unwrap();
    let mut s = settings("command", "", "");
    s.command = format!("sh {}", script.display());
    let r = ask(&s).unwrap();
    assert_eq!(answer::parse(&r.text).unwrap().description, "raise lr");

    s.command = "sleep 5".into();
    s.timeout_s = 0.3;
    let t = Instant::now();
    let e = ask(&s).unwrap_err().to_string();
    assert!(e.contains("no answer within"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(3));

    s.command = "exit 7".into();
    s.timeout_s = 5.0;
    assert!(ask(&s).unwrap_err().to_string().contains("exited"));
}

#[test]
fn structured_output_falls_back_through_the_dialects_and_remembers_the_one_accepted() {
    // llama-cpp-python 0.3.36's refusal of OpenAI's json_schema type (a 500, as captured from a
    // real server), then two good answers. A retried 500 would use up the script.
    let refusal = Canned::json(
        500,
        r#"{"error":{"message":"1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', 'ctx': {'expected': \"'text' or 'json_object'\"}}","type":"internal_server_error"}}"#,
    );
    let srv = serve(vec![refusal, Canned::json(200, openai_body(GOOD)), Canned::json(200, openai_body(GOOD))]);
    key("AQ_T_OPENAI_SHAPE", "fake-test-openai-shape");
    let mut p = proposer::make(&settings("openai", &format!("{}/v1", srv.url), "AQ_T_OPENAI_SHAPE")).unwrap();
    let tried = HashSet::new();
    let req = request(&tried);
    for _ in 0..2 {
        assert_eq!(answer::parse(&p.propose(&req).unwrap().text).unwrap().description, "raise lr");
    }
    let seen = srv.seen.lock().unwrap();
    let formats: Vec<serde_json::Value> = seen
        .iter()
        .map(|s| serde_json::from_str::<serde_json::Value>(&s.body).unwrap()["response_format"].clone())
        .collect();
    assert_eq!(formats[0]["type"], "json_schema");
    assert_eq!(
        formats[0]["json_schema"]["schema"]["required"],
        serde_json::json!(["description", "rationale", "edits"])
    );
    assert_eq!(formats[1]["type"], "json_object", "the second dialect after the refusal");
    assert_eq!(formats[1]["schema"], formats[0]["json_schema"]["schema"]);
    assert_eq!(formats[2]["type"], "json_object", "the accepted dialect is kept for the next proposal");
    assert_eq!(seen.len(), 3, "the refusal is not retried");
}

#[test]
fn structured_output_off_sends_no_format_and_a_bad_setting_is_one_line() {
    let srv = serve(vec![Canned::json(200, openai_body(GOOD))]);
    key("AQ_T_OPENAI_OFF", "fake-test-openai-off");
    let mut s = settings("openai", &format!("{}/v1", srv.url), "AQ_T_OPENAI_OFF");
    s.structured_output = "off".into();
    ask(&s).unwrap();
    let body: serde_json::Value = serde_json::from_str(&srv.seen.lock().unwrap()[0].body).unwrap();
    assert!(body.get("response_format").is_none(), "{body}");
    let err = autoqat_research::settings::Settings::parse(
        "[provider]\nstructured_output = \"yaml\"\n",
        std::path::Path::new("autoqat.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("structured_output") && err.contains("json_object") && err.lines().count() == 1, "{err}");
}

/// An Anthropic Messages answer that calls the `propose` tool with `input`, after a text block.
fn anthropic_tool_body(input: &str) -> String {
    serde_json::json!({
        "id": "msg", "type": "message", "role": "assistant",
        "content": [
            {"type": "text", "text": "I will propose a change."},
            {"type": "tool_use", "id": "toolu_01", "name": "propose", "input": serde_json::from_str::<serde_json::Value>(input).unwrap()}
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 900, "output_tokens": 100}
    })
    .to_string()
}

fn bodies(srv: &Server) -> Vec<serde_json::Value> {
    srv.seen.lock().unwrap().iter().map(|s| serde_json::from_str(&s.body).unwrap()).collect()
}

#[test]
fn anthropic_structured_output_forces_the_propose_tool_and_reads_its_input() {
    let srv = serve(vec![Canned::json(200, anthropic_tool_body(GOOD))]);
    key("AQ_T_ANTHROPIC_TOOL", "fake-ant-test-tool");
    let r = ask(&settings("anthropic", &srv.url, "AQ_T_ANTHROPIC_TOOL")).unwrap();
    let p = answer::parse(&r.text).unwrap();
    assert_eq!(p.description, "raise lr");
    assert_eq!(p.edits.len(), 1);
    assert_eq!((p.edits[0].search.as_str(), p.edits[0].replace.as_str()), ("lr = 0.001", "lr = 0.003"));
    assert!(!r.text.contains("I will propose"), "the tool input, not the text block, is the answer: {}", r.text);
    assert_eq!((r.input_tokens, r.output_tokens), (900, 100));
    // 900 * 2 / 1e6 + 100 * 10 / 1e6
    assert!((r.cost_usd - 0.0028).abs() < 1e-12, "{}", r.cost_usd);

    let body = &bodies(&srv)[0];
    assert_eq!(body["tool_choice"], serde_json::json!({"type": "tool", "name": "propose"}));
    let tools = body["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0]["name"], "propose");
    assert!(!tools[0]["description"].as_str().unwrap().is_empty());
    assert_eq!(tools[0]["input_schema"]["required"], serde_json::json!(["description", "rationale", "edits"]));

    // The same schema the openai proposer sends as its response_format.
    let oai = serve(vec![Canned::json(200, openai_body(GOOD))]);
    ask(&settings("openai", &format!("{}/v1", oai.url), "AQ_T_ANTHROPIC_TOOL")).unwrap();
    assert_eq!(tools[0]["input_schema"], bodies(&oai)[0]["response_format"]["json_schema"]["schema"]);
}

#[test]
fn anthropic_tools_refused_with_a_400_falls_back_to_text_for_the_rest_of_the_run() {
    let secret = "fake-ant-LEAKCANARY-tools-400";
    // What api.anthropic.com answers a request whose fields it does not accept.
    let refusal = Canned::json(
        400,
        format!(
            r#"{{"type":"error","error":{{"type":"invalid_request_error","message":"tools: Extra inputs are not permitted (key {secret})"}}}}"#
        ),
    );
    let srv = serve(vec![refusal, Canned::json(200, anthropic_body(GOOD)), Canned::json(200, anthropic_body(GOOD))]);
    key("AQ_T_ANTHROPIC_REFUSE", secret);
    let mut p = proposer::make(&settings("anthropic", &srv.url, "AQ_T_ANTHROPIC_REFUSE")).unwrap();
    let tried = HashSet::new();
    let req = request(&tried);
    for _ in 0..2 {
        let r = p.propose(&req).unwrap();
        assert_eq!(answer::parse(&r.text).unwrap().description, "raise lr");
        assert_eq!((r.input_tokens, r.output_tokens), (900, 100));
    }
    let sent = bodies(&srv);
    assert_eq!(sent.len(), 3, "the refusal is retried once without tools, not with them");
    assert_eq!(sent[0]["tools"][0]["name"], "propose");
    for (i, b) in sent.iter().enumerate().skip(1) {
        assert!(b.get("tools").is_none() && b.get("tool_choice").is_none(), "request {i} sent tools: {b}");
        assert_eq!(b["messages"][0]["content"], "user prompt");
    }

    // Insisting on structured output (a fixed dialect) makes the refusal an error, without the key.
    let refusal = Canned::json(
        400,
        format!(
            r#"{{"type":"error","error":{{"type":"invalid_request_error","message":"tool_choice: unknown {secret}"}}}}"#
        ),
    );
    let srv = serve(vec![refusal]);
    let mut s = settings("anthropic", &srv.url, "AQ_T_ANTHROPIC_REFUSE");
    s.structured_output = "json_schema".into();
    let e = ask(&s).unwrap_err();
    let msg = format!("{e} {e:?}");
    assert!(msg.contains("400") && msg.contains("tool_choice"), "{msg}");
    assert!(!msg.contains(secret), "key leaked into the error: {msg}");
    assert_eq!(srv.seen.lock().unwrap().len(), 1);
}

#[test]
fn anthropic_structured_output_off_sends_no_tools() {
    let srv = serve(vec![Canned::json(200, anthropic_body(GOOD))]);
    key("AQ_T_ANTHROPIC_OFF", "fake-ant-test-off");
    let mut s = settings("anthropic", &srv.url, "AQ_T_ANTHROPIC_OFF");
    s.structured_output = "off".into();
    let r = ask(&s).unwrap();
    assert_eq!(answer::parse(&r.text).unwrap().description, "raise lr");
    let body = &bodies(&srv)[0];
    assert!(body.get("tools").is_none() && body.get("tool_choice").is_none(), "{body}");
    assert_eq!(body["system"], "sys");
}
