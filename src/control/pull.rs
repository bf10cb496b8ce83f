//! The registry routes: a deploy by reference (`PUT
//! /v1/functions/NAME?image=REF[&platform=os/arch]`, empty body), `PATCH
//! …?pull=true` (pull the reference again, deploy if its digest moved),
//! `GET /v1/functions/NAME/pull` (the pull under way, layer by layer),
//! and the credentials faasd pulls with (`/v1/registries/HOST`: a login
//! only ever comes in; listing shows hosts and user names).

use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper::{Request, StatusCode};
use serde::Deserialize;

use super::reply::{json, text, Reply};
use super::{upload, ApiError, Control};
use crate::api::name::FunctionName;
use crate::api::{FunctionInfo, OptionsPatch};
use crate::manager::{ImageSource, ManagerError};
use crate::metrics;
use crate::pull::Platform;

/// A login body is a user name and a password.
const MAX_LOGIN: usize = 16 << 10;

/// A deploy's `image=` and `platform=`, and the rest of its query.
pub struct PullQuery {
    reference: String,
    platform: Platform,
}

/// Takes `image` and `platform` out of a deploy's query.
pub fn split_query(query: &str) -> Result<(Option<PullQuery>, String), String> {
    let mut reference = None;
    let mut platform = None;
    let mut rest = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "image" => reference = Some(v.into_owned()),
            "platform" => platform = Some(v.parse::<Platform>()?),
            _ => {
                rest.append_pair(&k, &v);
            }
        }
    }
    let pull = match (reference, platform) {
        (Some(reference), platform) => Some(PullQuery {
            reference,
            platform: platform.unwrap_or_default(),
        }),
        (None, Some(_)) => return Err("platform= goes with image=REF".into()),
        (None, None) => None,
    };
    Ok((pull, rest.finish()))
}

/// Takes `pull` out of an update's query.
pub fn split_update(query: &str) -> Result<(bool, String), ApiError> {
    let mut pull = false;
    let mut rest = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match (k.as_ref(), v.as_ref()) {
            ("pull", "true" | "1") => pull = true,
            ("pull", "false" | "0") => pull = false,
            ("pull", other) => {
                return Err(ApiError::BadRequest(format!(
                    "invalid pull={other:?} (true|false)"
                )))
            }
            _ => {
                rest.append_pair(&k, &v);
            }
        }
    }
    Ok((pull, rest.finish()))
}

/// Deploys `name` from the registry; the request carries no archive.
pub async fn deploy(
    control: &Control,
    name: FunctionName,
    patch: OptionsPatch,
    pull: PullQuery,
    req: Request<Incoming>,
) -> Result<FunctionInfo, ApiError> {
    if req.body().size_hint().lower() > 0 || (!req.body().is_end_stream() && has_body(req).await) {
        return Err(ApiError::BadRequest(
            "send either an image archive or image=REF, not both".into(),
        ));
    }
    let started = std::time::Instant::now();
    let plain = control.manager.plain_http(&pull.reference);
    let source = ImageSource::Registry {
        reference: pull.reference,
        platform: pull.platform,
        digest: None,
    };
    let deployed = match &control.cluster {
        Some(cluster) => cluster
            .deploy_pulled(name, patch, source)
            .await
            .map_err(ApiError::from),
        None => control
            .manager
            .deploy_at(name, patch, source, None)
            .await
            .map_err(|e| {
                count(&e);
                ApiError::from(e)
            }),
    };
    deployed.map(|mut info| {
        metrics::deployed(started.elapsed(), 0);
        if let Some(host) = plain {
            info.notes.push(format!(
                "{host} was reached over plain HTTP (faasd --insecure-registry): nothing in transit was private"
            ));
        }
        info
    })
}

/// Whether a body of unknown length holds any bytes (read to the end).
async fn has_body(req: Request<Incoming>) -> bool {
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) if f.data_ref().is_some_and(|d| !d.is_empty()) => return true,
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
    false
}

fn count(e: &ManagerError) {
    match e {
        ManagerError::Pull(p) => metrics::image_error(p.reason()),
        ManagerError::Image(i) => metrics::image_error(i.reason()),
        _ => {}
    }
}

/// `faas update NAME --pull`.
pub async fn update(
    control: &Control,
    name: &FunctionName,
    patch: OptionsPatch,
) -> Result<FunctionInfo, ApiError> {
    match &control.cluster {
        Some(cluster) => Ok(cluster.update_pull(name, patch).await?),
        None => control.manager.update_pull(name, patch).await.map_err(|e| {
            count(&e);
            e.into()
        }),
    }
}

/// The pull under way for `name`, layer by layer (404 when none is).
pub fn progress(control: &Control, name: &str) -> Reply {
    let name = FunctionName::parse(name)?;
    match control.manager.pull_progress(&name) {
        Some(p) => json(&p),
        None => Err(ApiError::NoRoute(format!("no pull under way for {name}"))),
    }
}

pub async fn logins(control: &Control) -> Reply {
    match &control.cluster {
        Some(cluster) => json(&cluster.registry_logins().await?),
        None => json(&control.manager.registry_logins()?),
    }
}

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

pub async fn login(control: &Control, host: &str, req: Request<Incoming>) -> Reply {
    let mut bytes = upload::read_small(req.into_body(), MAX_LOGIN).await?;
    let parsed: Result<LoginBody, _> = serde_json::from_slice(&bytes);
    bytes.fill(0);
    let mut login = parsed.map_err(|_| {
        ApiError::BadRequest(r#"send {"username": "...", "password": "..."}"#.into())
    })?;
    let stored = match &control.cluster {
        Some(cluster) => cluster
            .registry_login(host, &login.username, &login.password)
            .await
            .map_err(ApiError::from),
        None => control
            .manager
            .registry_login(host, &login.username, &login.password)
            .map_err(ApiError::from),
    };
    // The password leaves memory once stored.
    login.password.clear();
    let host = stored?;
    Ok(text(
        StatusCode::CREATED,
        format!("stored the login for {host}\n"),
    ))
}

pub async fn logout(control: &Control, host: &str) -> Reply {
    let host = match &control.cluster {
        Some(cluster) => cluster.registry_logout(host).await?,
        None => control.manager.registry_logout(host)?,
    };
    Ok(text(
        StatusCode::OK,
        format!("removed the login for {host}\n"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_pull_from_the_options() {
        let (pull, rest) =
            split_query("image=127.0.0.1%3A5000%2Fapp%3A1&warm=2&platform=linux%2Farm64")
                .expect("splits");
        let pull = pull.expect("a pull");
        assert_eq!(pull.reference, "127.0.0.1:5000/app:1");
        assert_eq!(pull.platform.to_string(), "linux/arm64");
        assert_eq!(rest, "warm=2");
        assert!(split_query("platform=linux%2Famd64").is_err());
        assert!(split_query("image=x&platform=amd64").is_err());
        let (none, rest) = split_query("warm=1").expect("splits");
        assert!(none.is_none());
        assert_eq!(rest, "warm=1");
        assert!(matches!(split_update("pull=true&warm=1"), Ok((true, r)) if r == "warm=1"));
        assert!(split_update("pull=maybe").is_err());
    }
}
