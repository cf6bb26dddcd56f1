//! Every request's count and latency, by route, method and status, for `/metrics`.
//!
//! A tower layer rather than `axum::middleware::from_fn`: that one boxes the inner service
//! and its future for every request, which on the tracker endpoint costs more than the
//! counting itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::app::Shared;

#[derive(Clone)]
pub struct ObserveLayer {
    state: Shared,
    routes: Arc<[&'static str]>,
}

impl ObserveLayer {
    /// `routes`: the path of every route served, the labels requests are counted by.
    pub fn new(state: Shared, routes: Vec<&'static str>) -> Self {
        ObserveLayer {
            state,
            routes: routes.into(),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            state: self.state.clone(),
            routes: self.routes.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    state: Shared,
    routes: Arc<[&'static str]>,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = route_label(&self.routes, request.extensions().get::<MatchedPath>());
        let method = request.method().clone();
        Observed {
            inner: self.inner.call(request),
            state: self.state.clone(),
            route,
            method,
            start: Instant::now(),
        }
    }
}

pin_project! {
    /// The route's own future, counted when it completes.
    pub struct Observed<F> {
        #[pin]
        inner: F,
        state: Shared,
        route: &'static str,
        method: Method,
        start: Instant,
    }
}

impl<F, E> Future for Observed<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            let status = response.status().as_u16();
            (this.state.metrics).request(this.route, this.method, status, this.start.elapsed());
        }
        Poll::Ready(result)
    }
}

/// The route pattern a request matched, as a fixed label (never the path itself, which
/// holds ids).
fn route_label(routes: &[&'static str], matched: Option<&MatchedPath>) -> &'static str {
    let path = matched.map_or("", MatchedPath::as_str);
    (routes.iter().copied())
        .find(|r| *r == path)
        .unwrap_or("unmatched")
}
