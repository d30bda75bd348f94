//! The PostgreSQL fixture and OpenBao's database engine on it: real servers, real
//! connections (issue 25).

use std::future::Future;
use std::time::{Duration, Instant};

use secretsync_testkit::openbao::OpenBao;
use secretsync_testkit::postgres::{ADMIN_USER, Postgres};

/// How long OpenBao may take to act on PostgreSQL after a command returned.
const DEADLINE: Duration = Duration::from_secs(15);

/// Polls `check` until it holds, or panics with `what` after [`DEADLINE`].
async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_server_takes_only_the_right_password_on_loopback_and_is_gone_after_drop() {
    let pg = Postgres::start();
    assert_eq!(pg.admin_user(), ADMIN_USER);
    assert_eq!(
        pg.admin_url(),
        format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable",
            pg.port()
        )
    );
    pg.connect(ADMIN_USER, pg.admin_password()).await.unwrap();
    let refused = pg.connect(ADMIN_USER, "wrong").await.unwrap_err();
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );
    assert!(pg.roles().await.contains(&ADMIN_USER.to_owned()));
    assert!(pg.role_exists(ADMIN_USER).await);
    assert!(!pg.role_exists("nobody").await);
    // Blocking twins work on a runtime's thread too.
    assert!(pg.role_exists_blocking(ADMIN_USER));
    pg.connect_blocking(ADMIN_USER, pg.admin_password())
        .unwrap();

    // Never as root: PostgreSQL refuses to, and CI runs as root.
    use std::os::unix::fs::MetadataExt;
    let pid = pg.pid().expect("the server runs");
    let server_uid = std::fs::metadata(format!("/proc/{pid}")).unwrap().uid();
    assert_ne!(server_uid, 0, "the postmaster runs as an unprivileged user");
    assert_eq!(std::fs::metadata(pg.data_dir()).unwrap().uid(), server_uid);

    let (port, data) = (pg.port(), pg.data_dir());
    drop(pg);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens on {port} after drop"
    );
    assert!(!data.exists(), "the data directory is removed on drop");
}

#[tokio::test]
async fn dynamic_credentials_work_until_their_lease_is_revoked_and_the_user_is_dropped() {
    let pg = Postgres::start();
    let Some(bao) = OpenBao::start() else { return };
    bao.enable_database(&pg, "database");
    bao.database_role(
        "database",
        "app",
        Duration::from_secs(600),
        Duration::from_secs(1200),
    );

    let first = bao.database_creds("database", "app");
    let second = bao.database_creds("database", "app");
    assert_ne!(first.username, second.username, "a new user per read");
    assert_eq!(first.ttl, Duration::from_secs(600));
    let lease = first
        .lease_id
        .clone()
        .expect("dynamic credentials have a lease");
    assert!(lease.starts_with("database/creds/app/"), "{lease}");
    assert_eq!(bao.leases("database/creds/app").len(), 2);
    assert!(pg.role_exists(&first.username).await);
    pg.connect(&first.username, &first.password).await.unwrap();
    pg.connect(&second.username, &second.password)
        .await
        .unwrap();

    let open = pg.session(&first.username, &first.password).await.unwrap();
    open.select_1().await.unwrap();

    bao.bao_ok(&["lease", "revoke", &lease]);
    eventually("the revoked user is dropped", || async {
        !pg.role_exists(&first.username).await
    })
    .await;
    assert!(!pg.roles().await.contains(&first.username));
    eventually("the revoked user's open session is ended", || async {
        open.select_1().await.is_err()
    })
    .await;
    let refused = pg
        .connect(&first.username, &first.password)
        .await
        .unwrap_err();
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );
    // The other lease's user is untouched, and its lease renews (the plugin's default
    // renewal statement moves the user's VALID UNTIL).
    let renewed = bao.bao_ok(&[
        "lease",
        "renew",
        "-format=json",
        "-increment=900",
        second.lease_id.as_deref().unwrap(),
    ]);
    let renewed: serde_json::Value = serde_json::from_str(&renewed).unwrap();
    assert_eq!(renewed["lease_duration"], 900, "{renewed}");
    pg.connect(&second.username, &second.password)
        .await
        .unwrap();
    assert_eq!(
        bao.leases("database/creds/app"),
        vec![second.lease_id.clone().unwrap()]
    );
}

#[tokio::test]
async fn a_static_roles_rotation_retires_the_old_password() {
    let pg = Postgres::start();
    let Some(bao) = OpenBao::start() else { return };
    bao.enable_database(&pg, "database");
    bao.database_static_role(
        &pg,
        "database",
        "billing",
        "billing_app",
        Duration::from_secs(3600),
    );

    let before = bao.database_static_creds("database", "billing");
    assert_eq!(before.username, "billing_app");
    assert_eq!(before.lease_id, None);
    assert!(before.ttl <= Duration::from_secs(3600) && before.ttl > Duration::ZERO);
    pg.connect("billing_app", &before.password).await.unwrap();

    bao.rotate_static_role("database", "billing");
    let after = bao.database_static_creds("database", "billing");
    assert_ne!(
        after.password, before.password,
        "rotate-role sets a new password"
    );
    eventually("the old password is refused", || async {
        pg.connect("billing_app", &before.password).await.is_err()
    })
    .await;
    pg.connect("billing_app", &after.password).await.unwrap();
    assert!(pg.role_exists("billing_app").await);
}
