"""prefpipe's engine: contracts, IO, execution, LLM engines. Stage-agnostic: no method logic here."""
