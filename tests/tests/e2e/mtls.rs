//! Issue 6: mutual TLS. The agency is taken from the client certificate; a certificate from another CA is
//! refused; a certificate's agency cannot be used to claim another.

use crate::common;

use std::time::Duration;

use halcyon_grpc::pb::{self, query_service_client::QueryServiceClient};
use halcyon_node::tls::TlsSettings;
use halcyon_policy::Purpose;
use halcyon_testkit::NatsServer;
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub(crate) pem: String,
}

pub(crate) fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// (certificate PEM, key PEM) signed by `ca`.
pub(crate) fn leaf(ca: &Ca, sans: Vec<String>, subject: &[(DnType, &str)]) -> (String, String) {
    let mut params = CertificateParams::new(sans).unwrap();
    let mut dn = DistinguishedName::new();
    for (t, v) in subject {
        dn.push(t.clone(), *v);
    }
    params.distinguished_name = dn;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

async fn client(
    addr: std::net::SocketAddr,
    server_ca: &Ca,
    identity: (String, String),
) -> Result<QueryServiceClient<Channel>, String> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&server_ca.pem))
        .identity(Identity::from_pem(identity.0, identity.1))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(QueryServiceClient::new(channel))
}

fn find(nhs: &str, after: &[halcyon_bus::Position]) -> pb::FindChildRequest {
    pb::FindChildRequest {
        context: Some(common::context(Purpose::Safeguarding, after)),
        identifier: Some(pb::find_child_request::Identifier::NhsNumber(nhs.into())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agency_comes_from_the_client_certificate_and_other_cas_are_refused() {
    let nats = NatsServer::start_with_auth();
    let data = tempfile::tempdir().unwrap();
    let (halcyon_ca, other_ca) = (ca("Halcyon agencies CA"), ca("Some other CA"));
    let (server_cert, server_key) = leaf(
        &halcyon_ca,
        vec!["localhost".into()],
        &[(DnType::CommonName, "halcyon node")],
    );
    let write = |name: &str, pem: &str| {
        let path = data.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let mut config = common::node_config(&nats, &data.path().join("node"));
    config.tls = Some(TlsSettings {
        cert: write("server.pem", &server_cert),
        key: write("server.key", &server_key),
        client_ca: write("ca.pem", &halcyon_ca.pem),
        crls: Vec::new(),
    });
    let node = common::start_node(config).await.unwrap();
    let s = common::children(1);
    let after = common::publish_as_agencies(&nats.url(), &s.envelopes).await;
    let nhs = s.children[0].nhs.to_string();

    let police = leaf(
        &halcyon_ca,
        vec![],
        &[
            (DnType::OrganizationName, "police-sy"),
            (DnType::OrganizationalUnitName, "practitioner"),
            (DnType::CommonName, "pc-4411"),
        ],
    );
    let mut police_client = client(node.addr, &halcyon_ca, police)
        .await
        .expect("a certificate from the agencies' CA is accepted");
    let view = police_client
        .find_child(find(&nhs, &after))
        .await
        .unwrap()
        .into_inner();
    assert!(
        view.facts.iter().any(|f| f.agency_id == "police-sy"),
        "the caller is police-sy, from its certificate"
    );

    // Claiming another agency with police's certificate.
    let mut claim = tonic::Request::new(find(&nhs, &after));
    claim
        .metadata_mut()
        .insert("x-halcyon-agency", "csc-rotherham".parse().unwrap());
    assert_eq!(
        police_client.find_child(claim).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );

    // A certificate from another CA, even naming a registered agency and carrying a valid token, is refused:
    // with TLS 1.3 the server rejects it after the client's side of the handshake, so the call (not the
    // connect) fails, with the transport closed and nothing returned.
    let forged = leaf(
        &other_ca,
        vec![],
        &[
            (DnType::OrganizationName, "csc-rotherham"),
            (DnType::OrganizationalUnitName, "practitioner"),
            (DnType::CommonName, "x"),
        ],
    );
    match client(node.addr, &halcyon_ca, forged).await {
        Err(_) => {}
        Ok(mut c) => {
            let err = c
                .find_child(common::authorised(find(&nhs, &after), "demo-csc-rotherham"))
                .await
                .unwrap_err();
            assert!(
                matches!(
                    err.code(),
                    tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
                ),
                "the handshake must fail: {err:?}"
            );
        }
    }
    node.stop(Duration::from_secs(5)).await;
}

/// A leaf like [`leaf`] with a chosen serial number (for a CRL to name).
fn leaf_serial(ca: &Ca, serial: u8, subject: &[(DnType, &str)]) -> (String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    for (t, v) in subject {
        dn.push(t.clone(), *v);
    }
    params.distinguished_name = dn;
    params.serial_number = Some(rcgen::SerialNumber::from(vec![0x4c, serial]));
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Replaces a file the way an operator's tooling should: write beside it, then rename over it.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Issue 18, rotation under load: the server certificate is replaced by one from a new server CA and a CRL
/// revokes the police certificate, then the node reloads while callers keep calling. The CSC caller never
/// fails, on its old connection or a new one; police calls fail only once its certificate is revoked (on
/// the connection it already holds too), and a new police connection is refused; a client that trusts only
/// the new server CA connects after the reload and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_and_a_revoked_client_is_refused() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let nats = NatsServer::start_with_auth();
    let data = tempfile::tempdir().unwrap();
    let (agencies_ca, server_ca, next_server_ca) = (ca("Agencies CA"), ca("Server CA 1"), ca("Server CA 2"));
    let server = leaf(
        &server_ca,
        vec!["localhost".into()],
        &[(DnType::CommonName, "node")],
    );
    let write = |name: &str, pem: &str| {
        let path = data.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let crl_revoking = |serials: Vec<u8>, number: u64| {
        let now = time::OffsetDateTime::from_unix_timestamp(halcyon_schema::clock::now_ms() / 1000).unwrap();
        rcgen::CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(1),
            next_update: now + time::Duration::days(7),
            crl_number: rcgen::SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .into_iter()
                .map(|serial| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(vec![0x4c, serial]),
                    revocation_time: now - time::Duration::minutes(1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&agencies_ca.issuer)
        .unwrap()
        .pem()
        .unwrap()
    };
    let (cert, key, crl) = (
        write("server.pem", &server.0),
        write("server.key", &server.1),
        write("agencies.crl", &crl_revoking(vec![], 1)),
    );
    let mut config = common::node_config(&nats, &data.path().join("node"));
    config.tls = Some(TlsSettings {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: write("ca.pem", &agencies_ca.pem),
        crls: vec![crl.clone()],
    });
    let node = common::start_node(config).await.unwrap();
    let s = common::children(1);
    let after = common::publish_as_agencies(&nats.url(), &s.envelopes).await;
    let nhs = s.children[0].nhs.to_string();
    let subject = |agency: &'static str, cn: &'static str| {
        [
            (DnType::OrganizationName, agency),
            (DnType::OrganizationalUnitName, "practitioner"),
            (DnType::CommonName, cn),
        ]
    };
    let csc = leaf_serial(&agencies_ca, 1, &subject("csc-rotherham", "sw-017"));
    let police = leaf_serial(&agencies_ca, 2, &subject("police-sy", "pc-4411"));
    assert!(
        client(node.addr, &next_server_ca, csc.clone()).await.is_err()
            || client(node.addr, &next_server_ca, csc.clone())
                .await
                .unwrap()
                .find_child(find(&nhs, &after))
                .await
                .is_err(),
        "before the rotation the node's certificate is not from the new server CA"
    );

    let csc_client = client(node.addr, &server_ca, csc.clone()).await.unwrap();
    let police_client = client(node.addr, &server_ca, police.clone()).await.unwrap();
    let mut police_watch = police_client
        .clone()
        .watch(pb::WatchRequest {
            context: Some(common::context(Purpose::Safeguarding, &[])),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let revoked = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (csc_ok, police_ok_after) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut callers = Vec::new();
    for _ in 0..4 {
        let (mut c, stop, ok, nhs, after) = (
            csc_client.clone(),
            stop.clone(),
            csc_ok.clone(),
            nhs.clone(),
            after.clone(),
        );
        callers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                c.find_child(find(&nhs, &after))
                    .await
                    .unwrap_or_else(|e| panic!("a CSC call failed during the rotation: {e:?}"));
                ok.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let police_caller = {
        let (mut c, stop, revoked, ok_after, nhs, after) = (
            police_client.clone(),
            stop.clone(),
            revoked.clone(),
            police_ok_after.clone(),
            nhs.clone(),
            after.clone(),
        );
        tokio::spawn(async move {
            let mut refused = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let was_revoked = revoked.load(Ordering::Acquire);
                match c.find_child(find(&nhs, &after)).await {
                    Ok(_) if was_revoked => {
                        ok_after.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
                        assert!(e.message().contains("revoked"), "{e:?}");
                        refused += 1;
                    }
                }
            }
            refused
        })
    };
    while csc_ok.load(Ordering::Relaxed) < 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The rotation: a certificate from the new server CA, and a CRL revoking the police certificate.
    let next = leaf(
        &next_server_ca,
        vec!["localhost".into()],
        &[(DnType::CommonName, "node 2")],
    );
    replace(&crl, &crl_revoking(vec![2], 2));
    replace(&key, &next.1);
    replace(&cert, &next.0);
    node.reload().expect("the new material loads");
    revoked.store(true, Ordering::Release);
    let at_reload = csc_ok.load(Ordering::Relaxed);
    while csc_ok.load(Ordering::Relaxed) < at_reload + 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The watch police opened before the revocation ends with it.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match police_watch.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the revoked watch ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the revoked certificate's watch went on");
    assert_eq!(ended.code(), tonic::Code::Unauthenticated, "{ended:?}");
    // A CRL file caught half-written (empty) is not taken: the revocation stays in force.
    std::fs::write(&crl, "").unwrap();
    assert!(node.reload().is_err(), "an empty CRL file was taken");
    replace(&crl, &crl_revoking(vec![2], 2));
    // A new connection: the new certificate is presented, the CSC certificate still accepted.
    let mut fresh = client(node.addr, &next_server_ca, csc.clone())
        .await
        .expect("a client trusting the new server CA connects after the reload");
    fresh.find_child(find(&nhs, &after)).await.unwrap();
    // A new police connection is refused at the handshake (or its first call fails with it).
    match client(node.addr, &next_server_ca, police.clone()).await {
        Err(_) => {}
        Ok(mut c) => {
            let err = c.find_child(find(&nhs, &after)).await.unwrap_err();
            assert_ne!(err.code(), tonic::Code::Ok, "{err:?}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    let refused = police_caller.await.unwrap();
    assert!(refused > 0, "police calls were refused after the revocation");
    // A call already past authentication when the CRL took effect may still complete: at most one per caller.
    assert!(police_ok_after.load(Ordering::Relaxed) <= 1);
    println!(
        "CSC calls answered: {} (none failed); police refused after revocation: {refused}",
        csc_ok.load(Ordering::Relaxed)
    );
    node.stop(Duration::from_secs(5)).await;
}
