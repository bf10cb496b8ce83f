//! The secrets routes: store a value (the request body), list names and
//! sizes, remove. A value only ever comes in.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::reply::{json, text, Reply};
use super::{upload, ApiError, Control};
use crate::secrets::MAX_BYTES;

pub async fn list(control: &Control) -> Reply {
    json(&control.manager.secrets().await?)
}

pub async fn create(control: &Control, name: &str, req: Request<Incoming>) -> Reply {
    let mut replace = false;
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match (k.as_ref(), v.as_ref()) {
            ("replace", "true" | "1") => replace = true,
            ("replace", "false" | "0") => replace = false,
            (k, v) => {
                return Err(ApiError::BadRequest(format!(
                    "unknown option {k}={v:?} (replace=true|false)"
                )))
            }
        }
    }
    let mut value = upload::read_small(req.into_body(), MAX_BYTES).await?;
    let result = control.manager.create_secret(name, &value, replace).await;
    // The value leaves memory as soon as it is stored.
    value.fill(0);
    result?;
    Ok(text(StatusCode::CREATED, format!("stored secret {name}\n")))
}

pub async fn remove(control: &Control, name: &str) -> Reply {
    control.manager.remove_secret(name).await?;
    Ok(text(StatusCode::OK, format!("removed secret {name}\n")))
}
