"""`nvir-agent demo`: a synthetic plate acquisition analysed live by the real agent."""
