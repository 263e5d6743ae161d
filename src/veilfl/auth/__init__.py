"""Who may talk to a veilfl server: Ed25519 identities, signed requests, enrollment,
round admissions and rate limits. Pure and synchronous; the HTTP edges drive it."""
