//! TLS to PostgreSQL, as libpq's `sslmode` describes it.
//!
//! tokio-postgres understands `sslmode=disable|prefer|require` only; a production database
//! URL says `verify-full` (or `verify-ca`) and may name a CA file with `sslrootcert`. Those
//! two parameters are taken out of the URL here and turned into a rustls configuration; the
//! rest of the URL goes to tokio-postgres unchanged.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;

use crate::store::{StoreError, StoreResult};

/// What the URL's `sslmode` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TlsMode {
    /// Plain TCP only.
    Disable,
    /// TLS if the server offers it, without checking its certificate (libpq's default).
    Prefer,
    /// TLS or no connection; the certificate is checked only if `sslrootcert` names a CA.
    Require,
    /// TLS with a certificate signed by a trusted CA, for any host name.
    VerifyCa,
    /// TLS with a certificate signed by a trusted CA and naming the host connected to.
    VerifyFull,
}

impl TlsMode {
    fn parse(value: &str) -> StoreResult<Self> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" | "allow" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => {
                return Err(StoreError::Setup(
                    "the database URL's sslmode must be disable, prefer, require, verify-ca or \
                     verify-full"
                        .into(),
                ))
            }
        })
    }

    /// The mode tokio-postgres negotiates with.
    pub(super) fn negotiation(self) -> SslMode {
        match self {
            Self::Disable => SslMode::Disable,
            Self::Prefer => SslMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => SslMode::Require,
        }
    }

    /// The URL spelling, for error messages.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// A database URL split into what tokio-postgres parses and the TLS settings it does not.
#[derive(Debug)]
pub(super) struct TlsUrl {
    /// The URL without `sslmode` and `sslrootcert`.
    pub(super) url: String,
    /// The URL's `sslmode` (libpq's default, `prefer`, when absent).
    pub(super) mode: TlsMode,
    /// The URL's `sslrootcert`: a PEM file of the CAs to trust instead of the web's.
    pub(super) root_cert: Option<String>,
}

impl TlsUrl {
    /// Takes `sslmode` and `sslrootcert` out of `url`'s query.
    pub(super) fn split(url: &str) -> StoreResult<Self> {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut mode = TlsMode::Prefer;
        let mut root_cert = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => mode = TlsMode::parse(&percent_decode(value)?)?,
                "sslrootcert" => root_cert = Some(percent_decode(value)?),
                _ => kept.push(pair),
            }
        }
        let url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok(Self {
            url,
            mode,
            root_cert,
        })
    }

    /// The rustls configuration this mode and CA file call for.
    pub(super) fn client_config(&self) -> StoreResult<ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Setup(format!("TLS setup: {e}")))?;
        let verify = match self.mode {
            TlsMode::Disable | TlsMode::Prefer => false,
            TlsMode::Require => self.root_cert.is_some(),
            TlsMode::VerifyCa | TlsMode::VerifyFull => true,
        };
        if !verify {
            return Ok(builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
                .with_no_client_auth());
        }
        if self.mode == TlsMode::VerifyCa && self.root_cert.is_none() {
            // Any certificate a public CA issued, for any name, would pass.
            return Err(StoreError::Setup(
                "sslmode=verify-ca needs sslrootcert (the CA that signed the database's \
                 certificate); or use verify-full"
                    .into(),
            ));
        }
        let roots = Arc::new(self.roots()?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| StoreError::Setup(format!("TLS setup: {e}")))?;
        if self.mode == TlsMode::VerifyFull {
            return Ok(builder.with_webpki_verifier(webpki).with_no_client_auth());
        }
        Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyHostName(webpki)))
            .with_no_client_auth())
    }

    fn roots(&self) -> StoreResult<RootCertStore> {
        let Some(path) = &self.root_cert else {
            return Ok(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            });
        };
        use rustls::pki_types::pem::PemObject;
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
            StoreError::Setup(format!("reading the database URL's sslrootcert: {e}"))
        })?;
        for cert in certs {
            let cert = cert.map_err(|e| {
                StoreError::Setup(format!("reading the database URL's sslrootcert: {e}"))
            })?;
            roots.add(cert).map_err(|e| {
                StoreError::Setup(format!("a certificate of the sslrootcert file: {e}"))
            })?;
        }
        if roots.is_empty() {
            return Err(StoreError::Setup(
                "the database URL's sslrootcert file holds no certificate".into(),
            ));
        }
        Ok(roots)
    }
}

/// `%XX` escapes of a URL query value, decoded.
fn percent_decode(value: &str) -> StoreResult<String> {
    let bad = || StoreError::Setup("the database URL has a bad %-escape".into());
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// `prefer` and `require` without a CA: encrypted, the server unauthenticated (libpq's
/// meaning of those modes; verify-full is what a production URL should say).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted CA; the name in the certificate is not
/// compared with the host.
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_leave_the_url_and_others_stay() {
        let split =
            TlsUrl::split("postgres://u@db:5432/relay?sslmode=verify-full&options=-c%20x%3Dy&sslrootcert=%2Fetc%2Fca.pem")
                .expect("valid");
        assert_eq!(split.url, "postgres://u@db:5432/relay?options=-c%20x%3Dy");
        assert_eq!(split.mode, TlsMode::VerifyFull);
        assert_eq!(split.root_cert.as_deref(), Some("/etc/ca.pem"));

        let plain = TlsUrl::split("postgres://u@db/relay").expect("valid");
        assert_eq!(plain.url, "postgres://u@db/relay");
        assert_eq!(plain.mode, TlsMode::Prefer);
        assert!(matches!(
            TlsUrl::split("postgres://db/x?sslmode=sometimes"),
            Err(StoreError::Setup(_))
        ));
    }

    /// verify-ca checks no host name: with the web's roots, any publicly issued
    /// certificate would pass, so it needs the database's own CA.
    #[test]
    fn verify_ca_needs_its_ca() {
        let without = TlsUrl::split("postgres://db/x?sslmode=verify-ca").expect("valid");
        assert!(matches!(
            without.client_config(),
            Err(StoreError::Setup(message)) if message.contains("sslrootcert")
        ));
        let full = TlsUrl::split("postgres://db/x?sslmode=verify-full").expect("valid");
        assert!(full.client_config().is_ok());
        let require = TlsUrl::split("postgres://db/x?sslmode=require").expect("valid");
        assert!(require.client_config().is_ok());
    }
}
