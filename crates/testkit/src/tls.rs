//! Certificates for a TLS test server, made fresh by rcgen: a CA, a server certificate for
//! 127.0.0.1 and localhost, and a client certificate, all written as PEM files.

use std::io;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The files [`write`] creates in a directory.
pub(crate) const FILES: [&str; 6] = [
    "ca.pem",
    "ca-key.pem",
    "server.pem",
    "server-key.pem",
    "client.pem",
    "client-key.pem",
];

fn other(error: rcgen::Error) -> io::Error {
    io::Error::other(format!("cannot make test certificates: {error}"))
}

/// Writes a CA (`ca.pem`, `ca-key.pem`), a certificate it signed for a server on 127.0.0.1
/// or localhost (`server.pem`, `server-key.pem`) and one for a client (`client.pem`,
/// `client-key.pem`) into `dir`.
pub fn write(dir: &Path, ca_name: &str) -> io::Result<()> {
    let ca_key = KeyPair::generate().map_err(other)?;
    let mut ca_params = CertificateParams::new(Vec::new()).map_err(other)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(other)?;
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let leaf = |names: Vec<String>, usage| -> io::Result<(String, String)> {
        let key = KeyPair::generate().map_err(other)?;
        let mut params = CertificateParams::new(names).map_err(other)?;
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).map_err(other)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (server, server_key) = leaf(
        vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let (client, client_key) = leaf(
        vec!["evstream-test-client".to_owned()],
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let contents = [
        ca_cert.pem(),
        ca_key.serialize_pem(),
        server,
        server_key,
        client,
        client_key,
    ];
    for (name, content) in FILES.iter().zip(contents) {
        std::fs::write(dir.join(name), content)?;
    }
    Ok(())
}
