"""How a task leaves without dropping a request: the numbers of a rollout and a scale-in, in one place.

When ECS retires a task (a rollout replaces it, autoscaling scales in, Fargate Spot reclaims it) it goes:

1. ECS deregisters the task from the target group: the load balancer sends it no new request and lets the
   ones in flight finish, for at most DEREGISTRATION_DELAY_S (it moves on as soon as none is left).
2. ECS then stops the container: SIGTERM. The service stops taking new work, finishes what it still holds
   (requests, and SSE streams, which get their final event) and exits, within SERVICE_DRAIN_S (issue 14's
   drain, service/; 20 s at most).
3. STOP_TIMEOUT_S after SIGTERM, SIGKILL for whatever is left.

So the delay covers the longest answer the service gives (a few seconds: a stream of the longest post) with a
wide margin, without the load balancer's default of 300 s, which would hold every rollout for five minutes;
and the stop timeout lets the drain run to its end before SIGKILL. A new task takes traffic once /readyz
answered HEALTHY_THRESHOLD times, HEALTH_CHECK_INTERVAL_S apart: the service is ready a few seconds after it
starts (the model loaded and its first program compiled), so about 10 s after that.
"""

SERVICE_DRAIN_S = 20  # the service's own bound, from SIGTERM to exit
STOP_TIMEOUT_S = SERVICE_DRAIN_S + 10  # the container's stopTimeout: SIGKILL only after the drain had its time
DEREGISTRATION_DELAY_S = 30  # the target group's deregistration_delay.timeout_seconds

HEALTH_CHECK_PATH = "/readyz"  # 200 once the model answers, 503 before (and while draining)
HEALTH_CHECK_INTERVAL_S = 5  # the shortest the load balancer allows
HEALTH_CHECK_TIMEOUT_S = 4  # /readyz answers at once; below the interval, as the load balancer requires
HEALTHY_THRESHOLD = 2  # checks in a row before a new task takes traffic
UNHEALTHY_THRESHOLD = 3  # checks in a row before a task is taken out (a 15 s stall, not one slow answer)
# ECS ignores the load balancer's verdict this long after a task starts: pulling the image is not counted, the
# model's first compilation is.
HEALTH_CHECK_GRACE_S = 30
