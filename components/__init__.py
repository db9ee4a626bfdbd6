"""Components of the registry-stack Pulumi program."""
