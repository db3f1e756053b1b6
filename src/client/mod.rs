//! The HTTP client for the PIN service.
