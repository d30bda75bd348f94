//! The AWS Secrets Manager backend against a real moto server (one per test).
#![cfg(feature = "aws")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use secretsync_api::{
    AwsAuth, AwsProvider, AwsSecretRef, Find, FindName, Reason, SecretKeySelector,
};
use secretsync_providers::aws::Aws;
use secretsync_providers::value::SecretString;
use secretsync_providers::{ConnectContext, Provider, ProviderError, RemoteValue, extract};
use secretsync_sandbox::Sandbox;
use secretsync_testkit::moto::Moto;

/// Planted in every secret: it must never show up in an error or a `Debug`.
const CANARY: &str = "s3cr3t-canary-a7d2";
/// The secret access key the tests sign with (moto accepts any until auth is enabled).
const TEST_SECRET_KEY: &str = "test-secret-access-key-9c1e";

fn spec(moto: &Moto) -> AwsProvider {
    AwsProvider {
        region: moto.region().into(),
        endpoint: Some(moto.endpoint()),
        role: None,
        auth: None,
    }
}

async fn with_keys(moto: &Moto, id: &str, secret: &str) -> Aws {
    Aws::with_static_credentials(&spec(moto), id, SecretString::from(secret.to_owned()))
        .await
        .unwrap()
}

async fn aws(moto: &Moto) -> Aws {
    with_keys(moto, "AKIDSECRETSYNCTEST", TEST_SECRET_KEY).await
}

fn text(remote: &RemoteValue) -> &str {
    std::str::from_utf8(remote.bytes.expose()).unwrap()
}

/// Neither the canary nor any of `secrets` may appear in what an error prints.
#[track_caller]
fn assert_clean(err: &ProviderError, secrets: &[&str]) {
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(CANARY), "secret value leaked: {text}");
        for secret in secrets {
            assert!(!text.contains(secret), "credential leaked: {text}");
        }
    }
}

fn find(name: Option<&str>, tags: &[(&str, &str)]) -> Find {
    Find {
        name: name.map(|r| FindName { regexp: r.into() }),
        tags: (!tags.is_empty()).then(|| {
            tags.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        }),
        path: None,
    }
}

#[tokio::test]
async fn reads_the_current_version_with_its_version_id() {
    let Some(moto) = Moto::start() else { return };
    let id = moto.create_secret("app/db", CANARY, &[]);
    let aws = aws(&moto).await;

    let value = aws.fetch("app/db", None).await.unwrap();
    assert_eq!(text(&value), CANARY);
    assert_eq!(value.version.as_deref(), Some(id.as_str()));
    // An empty version means the latest, like an omitted one.
    let value = aws.fetch("app/db", Some("")).await.unwrap();
    assert_eq!(value.version.as_deref(), Some(id.as_str()));
    assert!(!format!("{value:?}{aws:?}").contains(CANARY));
    assert!(!format!("{aws:?}").contains(TEST_SECRET_KEY));
}

#[tokio::test]
async fn pinned_version_ids_and_stages_read_older_versions() {
    let Some(moto) = Moto::start() else { return };
    let first = moto.create_secret("app/db", "one", &[]);
    let second = moto.put_secret_value("app/db", "two");
    let aws = aws(&moto).await;

    let current = aws.fetch("app/db", None).await.unwrap();
    assert_eq!(
        (text(&current), current.version.as_deref()),
        ("two", Some(second.as_str()))
    );
    let pinned = aws.fetch("app/db", Some(&first)).await.unwrap();
    assert_eq!(
        (text(&pinned), pinned.version.as_deref()),
        ("one", Some(first.as_str()))
    );
    let previous = aws.fetch("app/db", Some("AWSPREVIOUS")).await.unwrap();
    assert_eq!(
        (text(&previous), previous.version.as_deref()),
        ("one", Some(first.as_str()))
    );
    let staged = aws.fetch("app/db", Some("AWSCURRENT")).await.unwrap();
    assert_eq!(staged.version.as_deref(), Some(second.as_str()));

    let unknown = "00000000-0000-4000-8000-000000000000";
    let err = aws.fetch("app/db", Some(unknown)).await.unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains(unknown), "{err}");
    let err = aws.fetch("app/db", Some("NOSUCHSTAGE")).await.unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn json_properties_nested_by_dots_and_extract() {
    let Some(moto) = Moto::start() else { return };
    let id = moto.create_secret(
        "app/config",
        &format!(r#"{{"db":{{"user":"app","password":"{CANARY}"}},"port":5432,"mode":"ro"}}"#),
        &[],
    );
    let aws = aws(&moto).await;
    let value = aws.fetch("app/config", None).await.unwrap();
    assert_eq!(value.version.as_deref(), Some(id.as_str()));

    let select = |property| extract::select("app/config", &value, Some(property));
    assert_eq!(select("db.user").unwrap().expose(), b"app");
    assert_eq!(select("db.password").unwrap().expose(), CANARY.as_bytes());
    assert_eq!(select("port").unwrap().expose(), b"5432");
    let err = select("db.host").unwrap_err();
    assert!(
        matches!(err, ProviderError::PropertyNotFound { .. }),
        "{err}"
    );
    assert_eq!(err.reason(), Reason::RemoteKeyNotFound);
    assert_clean(&err, &[]);

    let fields = extract::extract_all("app/config", &value).unwrap();
    assert_eq!(fields.keys().collect::<Vec<_>>(), ["db", "mode", "port"]);
    assert_eq!(fields["mode"].expose(), b"ro");
}

#[tokio::test]
async fn binary_secrets_are_read_as_bytes() {
    let Some(moto) = Moto::start() else { return };
    let bytes = [0u8, 159, 146, 150, 255, b'\n'];
    let id = moto.create_binary_secret("app/keystore", &bytes);
    let aws = aws(&moto).await;
    let value = aws.fetch("app/keystore", None).await.unwrap();
    assert_eq!(value.bytes.expose(), bytes);
    assert_eq!(value.version.as_deref(), Some(id.as_str()));
}

#[tokio::test]
async fn find_matches_names_and_tags_in_name_order() {
    let Some(moto) = Moto::start() else { return };
    let b = moto.create_secret(
        "app/payments/b",
        "B",
        &[("team", "payments"), ("env", "prod")],
    );
    let a = moto.create_secret("app/payments/a", CANARY, &[("team", "payments")]);
    moto.create_secret("app/payments/c", "C", &[("team", "orders")]);
    moto.create_secret("app/orders/x", "X", &[("team", "payments")]);
    moto.create_secret("app/payments/untagged", "U", &[]);
    let aws = aws(&moto).await;

    let found = aws
        .find(&find(Some("^app/payments/"), &[("team", "payments")]))
        .await
        .unwrap();
    let got: Vec<_> = found
        .iter()
        .map(|(name, v)| (name.as_str(), text(v), v.version.as_deref().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("app/payments/a", CANARY, a.as_str()),
            ("app/payments/b", "B", b.as_str())
        ]
    );

    let names = |found: Vec<(String, RemoteValue)>| -> Vec<String> {
        found.into_iter().map(|(name, _)| name).collect()
    };
    let by_name = aws.find(&find(Some("^app/payments/"), &[])).await.unwrap();
    assert_eq!(
        names(by_name),
        [
            "app/payments/a",
            "app/payments/b",
            "app/payments/c",
            "app/payments/untagged"
        ]
    );
    let by_tags = aws
        .find(&find(None, &[("team", "payments"), ("env", "prod")]))
        .await
        .unwrap();
    assert_eq!(names(by_tags), ["app/payments/b"]);
    assert!(
        aws.find(&find(Some("^nothing/"), &[]))
            .await
            .unwrap()
            .is_empty()
    );

    let err = aws
        .find(&Find {
            path: Some("app".into()),
            ..Find::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidConfig(_)), "{err}");
    assert!(err.to_string().contains("find.path"), "{err}");
}

#[tokio::test]
async fn many_current_secrets_are_read_in_batches_of_twenty() {
    let Some(moto) = Moto::start() else { return };
    let mut ids = BTreeMap::new();
    for i in 0..45 {
        let name = format!("bulk/{i:02}");
        let id = moto.create_secret(&name, &format!("value-{i}"), &[]);
        ids.insert(name, id);
    }
    let first = ids["bulk/00"].clone();
    moto.put_secret_value("bulk/00", "value-0-new");
    let aws = aws(&moto).await;

    moto.record();
    let mut refs: Vec<(&str, Option<&str>)> =
        ids.keys().map(|name| (name.as_str(), None)).collect();
    refs.push(("bulk/00", Some(first.as_str())));
    refs.push(("bulk/missing", None));
    refs.push(("bulk/01", None)); // a repeat is read once
    let values = aws.fetch_many(&refs).await;
    assert_eq!(values.len(), refs.len());

    // 46 distinct current keys: 20 + 20 + 6.
    assert_eq!(moto.recorded("BatchGetSecretValue"), 3);
    // Only the pinned version is read on its own.
    assert_eq!(moto.recorded("GetSecretValue"), 1);

    for (i, name) in ids.keys().enumerate().skip(1) {
        let value = values[i].as_ref().unwrap();
        assert_eq!(text(value), format!("value-{i}"), "{name}");
        assert_eq!(value.version.as_deref(), Some(ids[name].as_str()), "{name}");
    }
    assert_eq!(text(values[0].as_ref().unwrap()), "value-0-new");
    let pinned = values[45].as_ref().unwrap();
    assert_eq!(
        (text(pinned), pinned.version.as_deref()),
        ("value-0", Some(first.as_str()))
    );
    let missing = values[46].as_ref().unwrap_err();
    assert!(
        matches!(missing, ProviderError::NotFound { .. }),
        "{missing}"
    );
    assert!(missing.to_string().contains("bulk/missing"), "{missing}");
    assert_eq!(text(values[47].as_ref().unwrap()), "value-1");

    // Through the provider enum, find batches its reads too.
    let provider = Provider::Aws(aws);
    moto.record();
    let found = provider.find(&find(Some("^bulk/"), &[])).await.unwrap();
    assert_eq!(found.len(), 45);
    assert_eq!(moto.recorded("BatchGetSecretValue"), 3);
    assert_eq!(moto.recorded("GetSecretValue"), 0);
    assert_eq!(moto.recorded("ListSecrets"), 1);
}

#[tokio::test]
async fn wrong_credentials_are_auth_failures() {
    let Some(moto) = Moto::start() else { return };
    moto.create_secret("app/db", CANARY, &[]);
    let (id, secret) = moto.enable_auth();

    let good = with_keys(&moto, &id, &secret).await;
    assert_eq!(text(&good.fetch("app/db", None).await.unwrap()), CANARY);
    good.check().await.unwrap();

    let wrong_secret = with_keys(&moto, &id, TEST_SECRET_KEY).await;
    let unknown_key = with_keys(&moto, "AKIDUNKNOWN0000000000", &secret).await;
    for aws in [&wrong_secret, &unknown_key] {
        let err = aws.fetch("app/db", None).await.unwrap_err();
        assert!(matches!(err, ProviderError::AuthFailed(_)), "{err}");
        assert_eq!(err.reason(), Reason::ProviderAuthFailed);
        assert!(!err.is_retryable());
        assert_clean(&err, &[&secret, TEST_SECRET_KEY]);
        let err = aws.check().await.unwrap_err();
        assert!(matches!(err, ProviderError::AuthFailed(_)), "{err}");
        let batch = aws
            .fetch_many(&[("app/db", None), ("app/other", None)])
            .await;
        for err in batch {
            let err = err.unwrap_err();
            assert!(matches!(err, ProviderError::AuthFailed(_)), "{err}");
        }
    }
    // moto answers these in XML, which the JSON protocol cannot parse into an error code
    // (AWS itself sends UnrecognizedClientException and friends): the 403 is what is left.
    let err = wrong_secret.fetch("app/db", None).await.unwrap_err();
    assert!(err.to_string().contains("(403)"), "{err}");
    assert!(err.to_string().contains("access key"), "{err}");
}

#[tokio::test]
async fn a_missing_secret_is_not_found() {
    let Some(moto) = Moto::start() else { return };
    let aws = aws(&moto).await;
    let err = aws.fetch("app/missing", None).await.unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err}");
    assert_eq!(err.reason(), Reason::RemoteKeyNotFound);
    assert!(err.to_string().contains("app/missing"), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_stopped_server_is_unavailable_within_seconds() {
    let Some(mut moto) = Moto::start() else {
        return;
    };
    moto.create_secret("app/db", CANARY, &[]);
    let aws = aws(&moto).await;
    aws.fetch("app/db", None).await.unwrap();

    moto.stop();
    let started = Instant::now();
    let err = aws.fetch("app/db", None).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, ProviderError::Unavailable(_)), "{err}");
    assert!(err.is_retryable());
    assert_eq!(err.reason(), Reason::ProviderUnavailable);
    assert!(err.to_string().contains(&moto.endpoint()), "{err}");
    assert_clean(&err, &[TEST_SECRET_KEY]);
    let err = aws.check().await.unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable(_)), "{err}");
    for err in aws.fetch_many(&[("app/db", None), ("app/b", None)]).await {
        assert!(matches!(err, Err(ProviderError::Unavailable(_))), "{err:?}");
    }
    let err = aws.find(&find(Some("^app/"), &[])).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable(_)), "{err}");

    // The same client heals once the server is back (empty: it is in-memory).
    moto.start_again();
    let err = aws.fetch("app/db", None).await.unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err}");
    let id = moto.create_secret("app/db", "back", &[]);
    let value = aws.fetch("app/db", None).await.unwrap();
    assert_eq!(
        (text(&value), value.version.as_deref()),
        ("back", Some(id.as_str()))
    );
}

fn selector(name: &str, key: &str, namespace: Option<&str>) -> SecretKeySelector {
    SecretKeySelector {
        name: name.into(),
        key: key.into(),
        namespace: namespace.map(Into::into),
    }
}

fn key_secret(name: &str, id: &str, secret: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([
            ("id".to_owned(), ByteString(id.as_bytes().to_vec())),
            // A trailing newline, as `kubectl create secret --from-file` often leaves.
            (
                "secret".to_owned(),
                ByteString(format!("{secret}\n").into_bytes()),
            ),
        ])),
        ..Secret::default()
    }
}

#[tokio::test]
async fn static_credentials_are_read_from_a_kubernetes_secret() {
    let Some(moto) = Moto::start() else { return };
    let sandbox = Sandbox::start().await.unwrap();
    moto.create_secret("app/db", CANARY, &[]);
    let (id, secret) = moto.enable_auth();
    let secrets: Api<Secret> = Api::namespaced(sandbox.client(), "default");
    secrets
        .create(&PostParams::default(), &key_secret("aws", &id, &secret))
        .await
        .unwrap();

    let store = secretsync_api::Provider::Aws(AwsProvider {
        auth: Some(AwsAuth::SecretRef(AwsSecretRef {
            access_key_id_secret_ref: selector("aws", "id", None),
            secret_access_key_secret_ref: selector("aws", "secret", None),
        })),
        ..spec(&moto)
    });
    let ctx = ConnectContext::new(sandbox.client(), Some("default".into()));
    let provider = Provider::connect(&store, &ctx).await.unwrap();
    assert_eq!(provider.name(), "aws");
    provider.check().await.unwrap();
    let value = provider.fetch("app/db", None).await.unwrap();
    assert_eq!(text(&value), CANARY);
    let debug = format!("{provider:?}");
    assert!(debug.contains("default/aws"), "{debug}");
    assert!(
        !debug.contains(&secret) && !debug.contains(CANARY),
        "{debug}"
    );

    // Keys from a Secret holding a wrong secret key: refused by AWS.
    secrets
        .create(
            &PostParams::default(),
            &key_secret("aws-wrong", &id, TEST_SECRET_KEY),
        )
        .await
        .unwrap();
    let wrong = secretsync_api::Provider::Aws(AwsProvider {
        auth: Some(AwsAuth::SecretRef(AwsSecretRef {
            access_key_id_secret_ref: selector("aws-wrong", "id", None),
            secret_access_key_secret_ref: selector("aws-wrong", "secret", None),
        })),
        ..spec(&moto)
    });
    let provider = Provider::connect(&wrong, &ctx).await.unwrap();
    let err = provider.fetch("app/db", None).await.unwrap_err();
    assert!(matches!(err, ProviderError::AuthFailed(_)), "{err}");
    assert_clean(&err, &[&secret, TEST_SECRET_KEY]);

    // A missing Secret: an auth failure naming it, from the first request.
    let missing = secretsync_api::Provider::Aws(AwsProvider {
        auth: Some(AwsAuth::SecretRef(AwsSecretRef {
            access_key_id_secret_ref: selector("nope", "id", None),
            secret_access_key_secret_ref: selector("nope", "secret", None),
        })),
        ..spec(&moto)
    });
    let provider = Provider::connect(&missing, &ctx).await.unwrap();
    let err = provider.fetch("app/db", None).await.unwrap_err();
    assert!(matches!(err, ProviderError::AuthFailed(_)), "{err}");
    assert!(err.to_string().contains("default/nope"), "{err}");
    let err = provider.check().await.unwrap_err();
    assert!(matches!(err, ProviderError::AuthFailed(_)), "{err}");

    // A namespace on a SecretStore's reference is refused up front; a ClusterSecretStore's
    // references must name theirs.
    let with_namespace = secretsync_api::Provider::Aws(AwsProvider {
        auth: Some(AwsAuth::SecretRef(AwsSecretRef {
            access_key_id_secret_ref: selector("aws", "id", Some("default")),
            secret_access_key_secret_ref: selector("aws", "secret", Some("default")),
        })),
        ..spec(&moto)
    });
    let err = Provider::connect(&with_namespace, &ctx).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidConfig(_)), "{err}");
    let cluster = ConnectContext::new(sandbox.client(), None);
    let provider = Provider::connect(&with_namespace, &cluster).await.unwrap();
    assert_eq!(text(&provider.fetch("app/db", None).await.unwrap()), CANARY);
    let err = Provider::connect(&store, &cluster).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidConfig(_)), "{err}");
}

#[tokio::test]
async fn bad_configuration_is_refused_up_front() {
    let Some(moto) = Moto::start() else { return };
    let secret = || SecretString::from(TEST_SECRET_KEY.to_owned());
    let err = Aws::with_static_credentials(
        &AwsProvider {
            endpoint: Some("127.0.0.1:5000".into()),
            ..spec(&moto)
        },
        "AKID",
        secret(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("http://"), "{err}");
    let err = Aws::with_static_credentials(
        &AwsProvider {
            region: " ".into(),
            ..spec(&moto)
        },
        "AKID",
        secret(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ProviderError::InvalidConfig(_)), "{err}");
    let err = aws(&moto).await.fetch("", None).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidConfig(_)), "{err}");
}
