//! A throwaway moto server (AWS emulator) per test, for AWS Secrets Manager.
//!
//! ```no_run
//! use secretsync_testkit::moto::Moto;
//!
//! let Some(moto) = Moto::start() else { return }; // SECRETSYNC_SKIP_TOOLS opt-out
//! let version_id = moto.create_secret("app/db", r#"{"password":"x"}"#, &[("team", "a")]);
//! let endpoint = moto.endpoint(); // http://127.0.0.1:PORT, region moto.region()
//! moto.record();                  // count requests from here on
//! // ... the code under test ...
//! assert_eq!(moto.recorded("BatchGetSecretValue"), 1);
//! ```
//!
//! moto keeps everything in memory and accepts any credentials until
//! [`Moto::enable_auth`]. The helpers here talk plain HTTP with a placeholder signature
//! (moto routes a request by the service in its credential scope), so they work only
//! while authentication is off: seed first, then enable it, or seed inside
//! [`Moto::without_auth`]. Requests are counted with
//! moto's recorder, which appends each request to a file in the handle's temporary
//! directory.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::{ChildGuard, TempDir, free_port, require_tool};

/// How long moto may take to answer after being spawned (it imports a lot of Python).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The region every helper uses; secrets in moto are per region.
const REGION: &str = "us-east-1";
/// Access key id on the helpers' requests; moto ignores it while authentication is off.
const HELPER_KEY_ID: &str = "AKIDSECRETSYNCTESTKIT";
/// The IAM user [`Moto::enable_auth`] makes.
const AUTH_USER: &str = "secretsync";

/// A running moto server, killed when dropped.
#[derive(Debug)]
pub struct Moto {
    // Dropped first: the server stops before its directory is removed.
    child: Option<ChildGuard>,
    bin: PathBuf,
    port: u16,
    dir: TempDir,
}

/// An HTTP answer from moto.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Moto {
    /// Starts moto on a free port and waits until it answers.
    ///
    /// `None` when `moto_server` is missing and the developer set `SECRETSYNC_SKIP_TOOLS`
    /// (the test should return early); panics when it is missing otherwise, or when the
    /// server does not come up (with its log).
    pub fn start() -> Option<Moto> {
        let bin = require_tool("moto_server")?;
        let mut moto = Moto {
            child: None,
            bin,
            port: free_port(),
            dir: TempDir::new("moto"),
        };
        moto.spawn();
        Some(moto)
    }

    /// `http://127.0.0.1:PORT`, the endpoint override for clients.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The region the helpers create secrets in.
    pub fn region(&self) -> &'static str {
        REGION
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the server's stdout and stderr go.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn recording_path(&self) -> PathBuf {
        self.dir.path().join("recording.jsonl")
    }

    /// Calls Secrets Manager action `action` (`CreateSecret`, …) with a JSON body and
    /// returns the answer, whatever its status.
    pub fn secretsmanager(&self, action: &str, body: &Value) -> Answer {
        let headers = [
            ("X-Amz-Target", format!("secretsmanager.{action}")),
            ("Content-Type", "application/x-amz-json-1.1".to_owned()),
            ("Authorization", placeholder_authorization("secretsmanager")),
        ];
        self.request("POST", "/", &headers, body.to_string().as_bytes())
    }

    /// Like [`Moto::secretsmanager`], but panics (with the answer) unless it succeeds, and
    /// returns the answer's JSON.
    pub fn secretsmanager_ok(&self, action: &str, body: &Value) -> Value {
        let answer = self.secretsmanager(action, body);
        assert!(
            answer.status == 200,
            "{action} failed ({}): {}",
            answer.status,
            answer.body
        );
        serde_json::from_str(&answer.body)
            .unwrap_or_else(|e| panic!("{action}: answer is not JSON ({e}): {}", answer.body))
    }

    /// Creates secret `name` with a string value and tags; returns its VersionId.
    pub fn create_secret(&self, name: &str, value: &str, tags: &[(&str, &str)]) -> String {
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect();
        let answer = self.secretsmanager_ok(
            "CreateSecret",
            &json!({"Name": name, "SecretString": value, "Tags": tags}),
        );
        version_id(&answer)
    }

    /// Creates secret `name` with a binary value; returns its VersionId.
    pub fn create_binary_secret(&self, name: &str, value: &[u8]) -> String {
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        let answer = self.secretsmanager_ok(
            "CreateSecret",
            &json!({"Name": name, "SecretBinary": encoded}),
        );
        version_id(&answer)
    }

    /// Writes a new current version of secret `name` (the old one becomes AWSPREVIOUS);
    /// returns its VersionId.
    pub fn put_secret_value(&self, name: &str, value: &str) -> String {
        let answer = self.secretsmanager_ok(
            "PutSecretValue",
            &json!({"SecretId": name, "SecretString": value}),
        );
        version_id(&answer)
    }

    /// Calls SQS action `action` (`CreateQueue`, …) in SQS's JSON protocol; panics (with
    /// the answer) unless it succeeds, and returns the answer's JSON.
    pub fn sqs_ok(&self, action: &str, body: &Value) -> Value {
        let headers = [
            ("X-Amz-Target", format!("AmazonSQS.{action}")),
            ("Content-Type", "application/x-amz-json-1.0".to_owned()),
            ("Authorization", placeholder_authorization("sqs")),
        ];
        let answer = self.request("POST", "/", &headers, body.to_string().as_bytes());
        assert!(
            answer.status == 200,
            "SQS {action} failed ({}): {}",
            answer.status,
            answer.body
        );
        if answer.body.trim().is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&answer.body)
            .unwrap_or_else(|e| panic!("SQS {action}: answer is not JSON ({e}): {}", answer.body))
    }

    /// Creates queue `name` (its messages invisible for `visibility` once received);
    /// returns its URL, on this server.
    pub fn create_queue(&self, name: &str, visibility: Duration) -> String {
        let answer = self.sqs_ok(
            "CreateQueue",
            &json!({"QueueName": name,
                "Attributes": {"VisibilityTimeout": visibility.as_secs().to_string()}}),
        );
        answer["QueueUrl"]
            .as_str()
            .unwrap_or_else(|| panic!("no QueueUrl in {answer}"))
            .to_owned()
    }

    /// Sends one message to the queue at `url`.
    pub fn send_message(&self, url: &str, body: &str) {
        self.sqs_ok(
            "SendMessage",
            &json!({"QueueUrl": url, "MessageBody": body}),
        );
    }

    /// Sends these messages to the queue at `url`, ten a request (`SendMessageBatch`).
    pub fn send_messages(&self, url: &str, bodies: &[String]) {
        for chunk in bodies.chunks(10) {
            let entries: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| json!({"Id": i.to_string(), "MessageBody": body}))
                .collect();
            let answer = self.sqs_ok(
                "SendMessageBatch",
                &json!({"QueueUrl": url, "Entries": entries}),
            );
            let failed = answer["Failed"].as_array().map_or(0, Vec::len);
            assert!(failed == 0, "SendMessageBatch: {answer}");
        }
    }

    /// How many messages the queue at `url` holds, received ones not yet deleted included.
    pub fn queue_messages(&self, url: &str) -> usize {
        let answer = self.sqs_ok(
            "GetQueueAttributes",
            &json!({"QueueUrl": url, "AttributeNames": [
                "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]}),
        );
        [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
        ]
        .iter()
        .map(|a| {
            answer["Attributes"][*a]
                .as_str()
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("no {a} in {answer}"))
        })
        .sum()
    }

    /// The ARN moto gave secret `name` (with the six characters AWS appends).
    pub fn arn_of(&self, name: &str) -> String {
        let described = self.secretsmanager_ok("DescribeSecret", &json!({"SecretId": name}));
        described["ARN"]
            .as_str()
            .unwrap_or_else(|| panic!("no ARN in {described}"))
            .to_owned()
    }

    /// Starts counting requests afresh: what moto received so far is forgotten.
    pub fn record(&self) {
        for call in ["reset-recording", "start-recording"] {
            let answer = self.request("POST", &format!("/moto-api/recorder/{call}"), &[], b"");
            assert!(
                answer.status == 200,
                "moto recorder {call} failed ({}): {}",
                answer.status,
                answer.body
            );
        }
    }

    /// How many Secrets Manager `action` requests (`BatchGetSecretValue`, …) moto received
    /// since [`Moto::record`].
    pub fn recorded(&self, action: &str) -> usize {
        let target = format!("secretsmanager.{action}");
        let Ok(text) = std::fs::read_to_string(self.recording_path()) else {
            return 0;
        };
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|entry| {
                entry["headers"].as_object().is_some_and(|headers| {
                    headers.iter().any(|(name, value)| {
                        name.eq_ignore_ascii_case("x-amz-target")
                            && value.as_str() == Some(target.as_str())
                    })
                })
            })
            .count()
    }

    /// Turns authentication on and returns access keys (id, secret) of an IAM user allowed
    /// every Secrets Manager action. From then on moto checks every signature: unknown keys
    /// are refused with `InvalidClientTokenId`, wrong secrets with `SignatureDoesNotMatch`,
    /// and the helpers of this type work only inside [`Moto::without_auth`].
    pub fn enable_auth(&self) -> (String, String) {
        // moto authenticates once it has served this many actions: the three calls below.
        self.reset_auth("3");
        let user = AUTH_USER;
        let policy = json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"}],
        })
        .to_string();
        self.iam_ok(&[("Action", "CreateUser"), ("UserName", user)]);
        self.iam_ok(&[
            ("Action", "PutUserPolicy"),
            ("UserName", user),
            ("PolicyName", "secretsmanager"),
            ("PolicyDocument", &policy),
        ]);
        let keys = self.iam_ok(&[("Action", "CreateAccessKey"), ("UserName", user)]);
        (
            xml_text(&keys, "AccessKeyId"),
            xml_text(&keys, "SecretAccessKey"),
        )
    }

    /// Runs `f` (seeding, say) with authentication off, once [`Moto::enable_auth`] turned it
    /// on; IAM keeps its users and keys, and checks signatures again afterwards. Other
    /// clients' requests in the meantime are not checked either: call it while nothing
    /// expects a refusal.
    pub fn without_auth<T>(&self, f: impl FnOnce(&Moto) -> T) -> T {
        self.reset_auth("inf");
        let out = f(self);
        self.reset_auth("0");
        out
    }

    /// Refuses (`true`) or allows again every Secrets Manager action of the user
    /// [`Moto::enable_auth`] made, by an explicit Deny policy: its keys stay valid.
    pub fn deny_user(&self, denied: bool) {
        self.without_auth(|moto| {
            if denied {
                let policy = json!({
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Deny", "Action": "secretsmanager:*", "Resource": "*"}],
                })
                .to_string();
                moto.iam_ok(&[
                    ("Action", "PutUserPolicy"),
                    ("UserName", AUTH_USER),
                    ("PolicyName", "deny"),
                    ("PolicyDocument", &policy),
                ]);
            } else {
                moto.iam_ok(&[
                    ("Action", "DeleteUserPolicy"),
                    ("UserName", AUTH_USER),
                    ("PolicyName", "deny"),
                ]);
            }
        });
    }

    /// moto checks signatures once it has served `after` more actions (`inf`: never).
    fn reset_auth(&self, after: &str) {
        let answer = self.request("POST", "/moto-api/reset-auth", &[], after.as_bytes());
        assert!(
            answer.status == 200,
            "moto reset-auth failed ({}): {}",
            answer.status,
            answer.body
        );
    }

    /// An IAM (query protocol) call that must succeed; returns the XML answer.
    fn iam_ok(&self, params: &[(&str, &str)]) -> String {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .append_pair("Version", "2010-05-08")
            .finish();
        let headers = [
            (
                "Content-Type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("Authorization", placeholder_authorization("iam")),
        ];
        let answer = self.request("POST", "/", &headers, body.as_bytes());
        assert!(
            answer.status == 200,
            "IAM {params:?} failed ({}): {}",
            answer.status,
            answer.body
        );
        answer.body
    }

    /// Kills the server (SIGKILL), for outage tests: requests then fail with "connection
    /// refused" until [`Moto::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.stop();
        }
    }

    /// Starts a fresh server on the same port. It is in-memory: everything is gone.
    pub fn start_again(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) {
        let (log, log_err) = crate::append_log(&self.log_path());
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-H")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .env("MOTO_RECORDER_FILEPATH", self.recording_path())
            // Keeps moto away from the developer's own AWS configuration.
            .env("HOME", self.dir.path())
            .env_remove("AWS_PROFILE")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let mut child = ChildGuard::spawn("moto_server", &mut cmd)
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        let what = format!("moto_server on {}", self.endpoint());
        crate::wait_until_answers(&mut child, &what, START_TIMEOUT, &self.log_path(), || {
            self.try_request("GET", "/moto-api/", &[], b"").is_some()
        });
        self.child = Some(child);
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Answer {
        self.try_request(method, path, headers, body)
            .unwrap_or_else(|| panic!("moto at {} did not answer {method} {path}", self.endpoint()))
    }

    /// One HTTP/1.0 exchange (the server closes the connection after answering), which
    /// keeps the test kit free of an HTTP client. `None` when nothing answers.
    fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Option<Answer> {
        let timeout = Duration::from_secs(10);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
        stream.set_read_timeout(Some(timeout)).ok()?;
        stream.set_write_timeout(Some(timeout)).ok()?;
        let mut head = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).ok()?;
        stream.write_all(body).ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).ok()?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.get(9..12)?.parse().ok()?;
        Some(Answer {
            status,
            body: body.to_owned(),
        })
    }
}

/// The message EventBridge delivers to SQS for the Secrets Manager call `name` CloudTrail
/// recorded at `time` (RFC 3339, to the second as both services give it), with its request
/// and response as CloudTrail logs them. moto sends no such events: tests send this where
/// EventBridge would.
pub fn cloudtrail_event(name: &str, request: Value, response: Value, time: &str) -> Value {
    json!({
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.secretsmanager",
        "account": "123456789012",
        "time": time,
        "region": REGION,
        "resources": [],
        "detail": {
            "eventVersion": "1.08",
            "userIdentity": {"type": "IAMUser", "accountId": "123456789012",
                "accessKeyId": "AKIAEXAMPLE", "userName": "deployer"},
            "eventTime": time,
            "eventSource": "secretsmanager.amazonaws.com",
            "eventName": name,
            "awsRegion": REGION,
            "sourceIPAddress": "203.0.113.7",
            "userAgent": "aws-cli/2.15.0",
            "requestParameters": request,
            "responseElements": response,
            "requestID": "9c1a7f0e-2f2e-4a53-bb2f-9b4c2c1d0e11",
            "eventID": "0d6a2e7e-6f55-4f6b-9d1e-8d1b6f1d3b8a",
            "readOnly": false,
            "eventType": "AwsApiCall",
            "managementEvent": true,
            "recipientAccountId": "123456789012",
            "eventCategory": "Management",
        },
    })
}

/// [`cloudtrail_event`] for a `PutSecretValue`, the secret named by its ARN (as in the
/// API's answer) and by `asked` in the request.
pub fn put_secret_value_event(arn: &str, asked: &str, time: &str) -> String {
    let request = json!({"secretId": asked, "secretString": "HIDDEN_DUE_TO_SECURITY_REASONS"});
    cloudtrail_event("PutSecretValue", request, json!({"arn": arn}), time).to_string()
}

/// An `Authorization` header moto routes by (service and region in the credential scope)
/// but does not verify while authentication is off.
fn placeholder_authorization(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={HELPER_KEY_ID}/20240101/{REGION}/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    )
}

fn version_id(answer: &Value) -> String {
    answer["VersionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no VersionId in {answer}"))
        .to_owned()
}

/// The text of the first `<tag>` element of an XML answer.
fn xml_text(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    xml.split_once(&open)
        .and_then(|(_, rest)| rest.split_once(&close))
        .map(|(text, _)| text.trim().to_owned())
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_seeds_counts_and_stops() {
        let Some(mut moto) = Moto::start() else {
            return;
        };
        assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
        let first = moto.create_secret("app/db", "one", &[("team", "a")]);
        let second = moto.put_secret_value("app/db", "two");
        assert_ne!(first, second);
        moto.record();
        let got = moto.secretsmanager_ok("GetSecretValue", &json!({"SecretId": "app/db"}));
        assert_eq!(got["SecretString"], "two");
        assert_eq!(got["VersionId"], second.as_str());
        let missing = moto.secretsmanager("GetSecretValue", &json!({"SecretId": "nope"}));
        assert!(missing.status >= 400, "{}", missing.body);
        assert!(
            missing.body.contains("ResourceNotFoundException"),
            "{}",
            missing.body
        );
        assert_eq!(moto.recorded("GetSecretValue"), 2);
        assert_eq!(moto.recorded("PutSecretValue"), 0);

        let queue = moto.create_queue("events", Duration::from_secs(30));
        assert!(queue.starts_with(&moto.endpoint()), "{queue}");
        moto.send_message(&queue, "one");
        moto.send_messages(&queue, &vec!["many".to_owned(); 15]);
        assert_eq!(moto.queue_messages(&queue), 16);

        moto.stop();
        assert!(!moto.is_running());
        assert!(moto.try_request("GET", "/moto-api/", &[], b"").is_none());
        moto.start_again();
        let gone = moto.secretsmanager("GetSecretValue", &json!({"SecretId": "app/db"}));
        assert!(
            gone.body.contains("ResourceNotFoundException"),
            "in-memory: {}",
            gone.body
        );
    }
}
