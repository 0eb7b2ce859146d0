"""What the openai backend's tests send: prompts, sampling settings and a structured-output schema
(tests/test_openai.py against the loopback server, tests/test_openai_requests.py without one)."""

from __future__ import annotations

from pydantic import BaseModel

from pipeline.config import Sampling

SAMPLING = Sampling(temperature=0.8, top_p=0.95, max_new_tokens=24, stop=[], seed=3)
GREEDY = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=12, stop=[], seed=0)
PROMPTS = [
    [{"role": "user", "content": "Hello there! Can you help me?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 12 times 12?"}],
    [{"role": "user", "content": "Write a haiku about autumn."}],
]


class Query(BaseModel):
    query: str
