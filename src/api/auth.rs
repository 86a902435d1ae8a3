//! Bearer-token auth for /api/*, compared in constant time.

use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::SecurityScheme;
use subtle::ConstantTimeEq;

/// The token clients must present (request data set by the api).
#[derive(Clone)]
pub struct ApiToken(pub String);

/// `Authorization: Bearer $API_TOKEN`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_token")]
pub struct ApiAuth(());

async fn check_token(req: &Request, bearer: Bearer) -> Option<()> {
    let expected = req.data::<ApiToken>()?;
    let given = bearer.token.as_bytes();
    let want = expected.0.as_bytes();
    (given.len() == want.len() && bool::from(given.ct_eq(want))).then_some(())
}
