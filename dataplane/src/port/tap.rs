//! TAP port (placeholder while the AF_PACKET port is brought up).
