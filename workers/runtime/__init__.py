"""What runs on a grid node: the worker, task functions and output parsers.

Never imports Django or campaigns; depends only on rq, redis and the standard library.
"""
