"""Runs triton_digits.py with Triton bound to 127.0.0.1 and a known access token.

triton_digits.py leaves the listen addresses at Triton's default (all interfaces) and lets pytriton
pick a random token for Triton's restricted APIs (the statistics API among them). This wraps it so
that HTTP, gRPC and metrics listen on 127.0.0.1 only and the token is the one in the environment
variable TRITON_LOCAL_TOKEN (never written to disk). Arguments are triton_digits.py's.
"""

import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import triton_digits  # noqa: E402
from pytriton.triton import TritonSecurityConfig  # noqa: E402

LOCAL = "127.0.0.1"
triton_digits.TritonConfig = functools.partial(
    triton_digits.TritonConfig, http_address=LOCAL, grpc_address=LOCAL, metrics_address=LOCAL
)
triton_digits.Triton = functools.partial(
    triton_digits.Triton,
    security_config=TritonSecurityConfig(access_token=os.environ.pop("TRITON_LOCAL_TOKEN")),
)
sys.argv = ["triton_digits.py", *sys.argv[1:]]
triton_digits.main()
