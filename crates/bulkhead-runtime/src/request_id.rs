//! The id of the request being served, set by the edge layer ([`crate::edge`]) for the whole
//! of a request, so that an error body and its log line can name it without passing it around.

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being served; `None` outside a request.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Runs `fut` as the request `id`.
pub(crate) async fn scope<F: std::future::Future>(id: String, fut: F) -> F::Output {
    CURRENT.scope(id, fut).await
}
