//! Backend outages longer than the backoff cap (guarantee 7, docs/reference/guarantees.md): OpenBao and moto are
//! stopped, then started again. Meanwhile every SecretSync says `ProviderUnavailable`, no
//! Secret is deleted or changed, retries stay within the cap (no hot loop), and once the
//! backends are back everything is Ready again within one cap.

use std::time::Duration;

use secretsync_api::SecretSync;
use secretsync_operator::Config;
use secretsync_testkit::moto::Moto;
use secretsync_testkit::openbao::OpenBao;
use tokio::time::Instant;

use crate::aws::aws_store;
use crate::common::{Env, sync_yaml};
use crate::vault::vault_store;

/// The operator's `--max-backoff-seconds` in this test.
const CAP: Duration = Duration::from_secs(2);
/// How long the backends stay down: several caps.
const OUTAGE: Duration = Duration::from_secs(8);

#[tokio::test]
async fn outages_longer_than_the_backoff_cap_lose_nothing_and_heal_within_one_cap() {
    let (Some(mut bao), Some(mut moto)) = (OpenBao::start(), Moto::start()) else {
        return;
    };
    let seed_backends = |bao: &OpenBao, moto: &Moto| {
        bao.kv_put("secret", "app/db", &[("password", "from-bao")]);
        moto.create_secret("app/db", r#"{"password":"from-aws"}"#, &[]);
    };
    seed_backends(&bao, &moto);
    let env = Env::without_operator("payments")
        .await
        .with_operator_behind_proxy(Config {
            max_backoff: CAP,
            ..Config::default()
        })
        .await;
    vault_store(&env, &bao, bao.root_token()).await;
    aws_store(&env, &moto, "testing", "testing").await;
    env.create::<SecretSync>(&sync_yaml("from-vault", "vault", "  refreshInterval: 1s"))
        .await;
    env.create::<SecretSync>(&sync_yaml("from-aws", "aws", "  refreshInterval: 1s"))
        .await;
    let mut before = Vec::new();
    for name in ["from-vault", "from-aws"] {
        env.wait_version(name, 1).await;
        before.push(env.secret(&format!("{name}-v1")).await.unwrap());
    }

    env.proxy().reset_requests();
    bao.stop();
    moto.stop();
    let down = Instant::now();
    for name in ["from-vault", "from-aws"] {
        env.wait_failure(name, "Ready", "ProviderUnavailable").await;
    }
    let reads = env.operator().backend_reads();
    // The outage itself: this is the duration under test, not a wait for a condition.
    tokio::time::sleep(OUTAGE.saturating_sub(down.elapsed())).await;
    let tries = env.operator().backend_reads() - reads;

    bao.start_again();
    moto.start_again();
    seed_backends(&bao, &moto);
    let up = Instant::now();
    for name in ["from-vault", "from-aws"] {
        env.wait_condition(name, "Ready", "True").await;
    }
    let healed = up.elapsed();
    println!(
        "outage of {OUTAGE:?} with a {CAP:?} backoff cap: {tries} backend attempts while down, Ready again {healed:?} after the backends returned"
    );
    // Retries kept to the cap: two SecretSyncs and two store checks, each retrying at most
    // once per cap once its backoff has grown (plus the short first steps) — not a hot loop.
    let per_cap = OUTAGE.as_secs_f64() / CAP.as_secs_f64();
    assert!((tries as f64) <= 4.0 * (per_cap + 2.0), "{tries} attempts");
    // Within one cap (plus its 20 % jitter and a pass).
    assert!(
        healed < CAP.mul_f64(1.2) + Duration::from_secs(1),
        "{healed:?}"
    );

    let stats = env.proxy().requests();
    assert_eq!(stats.count("delete", "", "secrets"), 0, "{stats:?}");
    for (name, old) in ["from-vault", "from-aws"].iter().zip(&before) {
        assert_eq!(env.version_secrets(name).await, [format!("{name}-v1")]);
        let now = env.secret(&format!("{name}-v1")).await.unwrap();
        assert_eq!(now.data, old.data);
        assert_eq!(now.metadata.resource_version, old.metadata.resource_version);
    }
}
