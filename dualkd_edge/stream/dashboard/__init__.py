"""The operator page and monitoring endpoints of a running `infer` (`--http`), and the guard in front of them."""
