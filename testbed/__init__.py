"""What the e2e suite and the benchmark share: the realizer of the program on a real engine
(realize, stack), the local images (images), stand-in upstreams and Pebble, clients, and
host-side names and trust. Not a test module: nothing here asserts.
"""

# The label every container, volume and network an e2e stack creates carries, so that two
# stacks sharing one engine clean up only their own (see stack.remove_leftovers).
E2E_STACK_LABEL = "registry-stack.e2e-stack"
