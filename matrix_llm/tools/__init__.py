"""Commands that use the modes without being one: analyze, eval (the dispatcher), demo, env."""
