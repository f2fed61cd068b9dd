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

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
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
fn leaf(ca: &Ca, sans: Vec<String>, subject: &[(DnType, &str)]) -> (String, String) {
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
