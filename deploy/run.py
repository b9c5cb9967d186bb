"""Deploy the built image to ECS Fargate behind a load balancer, or remove everything a deploy made.

`deploy` checks params against what AWS accepts (deploy/checks.py), pushes the image, makes sure of the
cluster, log group, execution role, task definition, load balancer, security groups, service and its
autoscaling, waits for the rollout and writes a small record of the deployment. Each step changes only what
differs, so a second run with the same inputs makes no mutating AWS call; `apply=False` lists the changes and
makes none. AWS's refusals (access denied, a quota, ...) become one line naming the call.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import boto3
import botocore.exceptions

from deploy import balancer, checks, ecr, ecs, network, rollout
from deploy.aws import UNREACHABLE, Aws, error_code, unreachable
from tweetbot.runtime.errors import UserError

SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "PRIVATE_KEY", "ACCESS_KEY", "CREDENTIAL")
ARCHITECTURES = {"linux/amd64": "X86_64", "linux/arm64": "ARM64"}


@contextlib.contextmanager
def aws_errors_as_user_errors():
    try:
        yield
    except botocore.exceptions.ClientError as error:
        operation = getattr(error, "operation_name", "a call")
        message = error.response.get("Error", {}).get("Message", "")
        raise UserError(f"AWS refused {operation} ({error_code(error)}: {message})") from None
    except botocore.exceptions.NoCredentialsError:
        raise UserError("no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY") from None
    except UNREACHABLE as error:
        raise unreachable(error) from None


def names(name: str) -> dict[str, str]:
    """What a deploy named `name` creates: one name each, so destroy finds exactly these."""
    return {
        "repository": name,
        "cluster": name,
        "service": name,
        "family": name,
        "log_group": f"/ecs/{name}",
        "role": f"{name}-task-execution",
    }


def deploy(
    params,
    layout: Path,
    image_record: Path,
    out: Path | None,
    apply: bool = True,
    session: boto3.Session | None = None,
) -> dict | None:
    """Make the deployment match the image and params; write `out` and return it (None when only planning)."""
    image = json.loads(image_record.read_text())
    _check_environment(params.environment)
    platform = image.get("platform", "linux/amd64")
    if platform not in ARCHITECTURES:
        raise UserError(f"{image_record}: platform {platform} cannot run on Fargate: build linux/amd64")
    oci = ecr.read_layout(layout)
    if oci.digest != image["digest"]:
        raise UserError(
            f"{layout} holds {oci.digest}, not {image['digest']} of {image_record}: "
            "run `dvc repro deploy/dvc.yaml:image`"
        )
    aws = Aws(params.region, apply=apply, session=session)
    checks.check(params, aws.region, ARCHITECTURES[platform])
    named = names(params.name)
    tags = {"project": params.name}  # on everything; a revision (and so each task) also says what it runs
    revision_tags = {**tags, "model-version": str(image.get("model_version")), "image-tag": image["tag"]}
    with aws_errors_as_user_errors():
        repository_uri, repository_existed = ecr.ensure_repository(aws, named["repository"], tags)
        ecr.push(aws, named["repository"], oci, image["tag"], repository_existed)
        image_uri = f"{repository_uri}@{oci.digest}"
        ecs.ensure_cluster(aws, named["cluster"], tags)
        ecs.ensure_log_group(aws, named["log_group"], params.log_retention_days, tags)
        role_arn = ecs.ensure_execution_role(aws, named["role"], tags)
        definition = ecs.task_definition(
            family=named["family"],
            image=image_uri,
            execution_role_arn=role_arn,
            log_group=named["log_group"],
            region=aws.region,
            cpu=params.cpu,
            memory=params.memory,
            port=params.port,
            environment=params.environment,
            tags=revision_tags,
            architecture=ARCHITECTURES[platform],
        )
        task_definition_arn = ecs.ensure_task_definition(aws, definition)
        own_balancer = params.load_balancer and not params.target_group_arn
        vpc, subnets = network.placement(aws, params.subnets, zones_needed=2 if own_balancer else 1)
        front = _ensure_balancer(aws, params, vpc, subnets, tags)
        security_groups = params.security_groups or [_ensure_tasks_group(aws, params, vpc, front, tags)]
        ecs.ensure_service(
            aws,
            cluster=named["cluster"],
            name=named["service"],
            task_definition_arn=task_definition_arn,
            desired_count=params.desired_count,
            network=network.awsvpc_configuration(subnets, security_groups, params.assign_public_ip),
            port=params.port,
            balancer=front,
            spot=params.spot,
            tags=tags,
        )
        ecs.ensure_autoscaling(aws, named["cluster"], named["service"], params, front, tags)
        if not apply:
            if not params.load_balancer:
                _remove_balancer(aws, params.name, vpc)
            aws.say(f"{len(aws.changes)} change(s) planned" if aws.changes else "no changes: the deployment is current")
            return None
        deployment = rollout.wait_for_rollout(
            aws.client("ecs"),
            named["cluster"],
            named["service"],
            task_definition_arn,
            params.rollout_timeout_s,
            progress=aws.say,
        )
        if not params.load_balancer:  # a load balancer from before: it goes once the rollout moved the tasks off it
            _remove_balancer(aws, params.name, vpc)
        if front:
            url = front.url
            counts = balancer.health(aws.client("elbv2"), front.target_group_arn)
            aws.say(f"targets: {', '.join(f'{n} {state}' for state, n in sorted(counts.items())) or 'none yet'}")
        else:
            url = rollout.public_endpoint(
                aws.client("ecs"),
                aws.client("ec2"),
                named["cluster"],
                named["service"],
                task_definition_arn,
                params.port,
            )
    record = {
        "region": aws.region,
        "cluster": named["cluster"],
        "service": named["service"],
        "task_definition": task_definition_arn,
        "image": image_uri,
        "image_tag": image["tag"],
        "model_version": image.get("model_version"),
        "rollout": deployment.get("rolloutState"),
        "target_group": front.target_group_arn if front else None,
        "endpoint": url,
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
    mutating = aws.mutating_calls
    aws.say(f"AWS calls: {len(aws.calls)}, of which {len(mutating)} changed something")
    aws.say(f"endpoint: {url}" if url else "endpoint: no running task with a public address yet")
    return record


def _ensure_balancer(aws: Aws, params, vpc: str, subnets: list[str], tags) -> balancer.Balancer | None:
    """What the service registers in: tweetbot's load balancer, the user's target group, or nothing."""
    if not params.load_balancer:
        return None
    if params.target_group_arn:
        return balancer.adopt(aws.client("elbv2"), params.target_group_arn)
    return balancer.ensure(aws, params.name, vpc, subnets, params.allowed_cidrs, params.certificate_arn, tags)


def _ensure_tasks_group(aws: Aws, params, vpc: str, front: balancer.Balancer | None, tags) -> str:
    """The tasks' own security group: the service port from the load balancer's groups, or without one from
    deploy.allowed_cidrs."""
    if front:
        ingress = network.from_groups(params.port, list(front.security_groups))
        source, labels = (
            "the load balancer",
            {group: "the load balancer's security group" for group in front.security_groups},
        )
    else:
        ingress, source, labels = network.from_cidrs(params.port, params.allowed_cidrs), "deploy.allowed_cidrs", {}
    return network.ensure_security_group(
        aws,
        network.tasks_group_name(params.name),
        vpc,
        [ingress],
        tags,
        purpose=f"the tasks: {params.port} from {source}",
        labels=labels,
    )


def _remove_balancer(aws: Aws, name: str, vpc: str | None) -> None:
    """Remove tweetbot's load balancer, target group and the balancer's security group, those that exist."""
    balancer.remove(aws, name, progress=aws.say)
    _remove_security_group(aws, balancer.security_group_name(name), vpc)


def _remove_security_group(aws: Aws, group_name: str, vpc: str | None) -> None:
    group = network.find_security_group(aws, group_name, vpc) if vpc else None
    if group:
        aws.change(
            f"delete security group {group_name}",
            lambda: _delete_security_group(aws.client("ec2"), group["GroupId"]),
        )


def _check_environment(environment: dict) -> None:
    for key, value in environment.items():
        if key == "PORT":
            raise UserError("params.yaml: deploy.environment.PORT: the service listens on deploy.port: remove PORT")
        if not isinstance(value, str):
            raise UserError(f"params.yaml: deploy.environment.{key} must be a string: quote it")
        if any(word in key.upper() for word in SECRET_WORDS):
            raise UserError(
                f"params.yaml: deploy.environment.{key} looks like a secret: a task definition is no place "
                "for secrets, remove it"
            )


def destroy(params, out: Path | None, apply: bool = True, session: boto3.Session | None = None) -> list[str]:
    """Remove what `deploy` made (newest first); return the changes made or, when not applying, planned."""
    aws = Aws(params.region, apply=apply, session=session)
    named = names(params.name)
    with aws_errors_as_user_errors():
        _destroy_service(aws, named)
        vpc = network.vpc_of(aws, params.subnets)
        balancer.remove(aws, params.name, progress=aws.say)  # a target group of deploy.target_group_arn stays
        # The tasks' group first: it names the load balancer's. Both wait for the network interfaces to go.
        _remove_security_group(aws, network.tasks_group_name(params.name), vpc)
        _remove_security_group(aws, balancer.security_group_name(params.name), vpc)
        _destroy_infrastructure(aws, named)
    if apply and out is not None and out.exists():
        out.unlink()  # so the next `dvc repro` deploys again
    return aws.changes


def _destroy_service(aws: Aws, named: dict) -> None:
    ecs_client, scaling = aws.client("ecs"), aws.client("application-autoscaling")
    resource = f"service/{named['cluster']}/{named['service']}"
    policies = scaling.describe_scaling_policies(ServiceNamespace="ecs", ResourceId=resource)["ScalingPolicies"]
    for policy in policies:
        aws.change(
            f"delete scaling policy {policy['PolicyName']}",
            lambda policy=policy: scaling.delete_scaling_policy(
                PolicyName=policy["PolicyName"],
                ServiceNamespace="ecs",
                ResourceId=resource,
                ScalableDimension=policy["ScalableDimension"],
            ),
        )
    if scaling.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[resource])["ScalableTargets"]:
        aws.change(
            f"stop autoscaling {named['service']}",
            lambda: scaling.deregister_scalable_target(
                ServiceNamespace="ecs", ResourceId=resource, ScalableDimension=ecs.SCALABLE_DIMENSION
            ),
        )
    if ecs.describe_service(aws, named["cluster"], named["service"]):
        aws.change(
            f"delete ECS service {named['service']} and stop its tasks",
            lambda: ecs_client.delete_service(cluster=named["cluster"], service=named["service"], force=True),
        )
        if aws.apply:  # the cluster cannot go while the service drains
            ecs_client.get_waiter("services_inactive").wait(
                cluster=named["cluster"],
                services=[named["service"]],
                WaiterConfig={"Delay": 10, "MaxAttempts": 60},
            )
    paginator = ecs_client.get_paginator("list_task_definitions")
    for page in paginator.paginate(familyPrefix=named["family"], status="ACTIVE"):
        for arn in page["taskDefinitionArns"]:
            if rollout.revision(arn).split(":")[0] == named["family"]:
                aws.change(
                    f"deregister task definition {rollout.revision(arn)}",
                    lambda arn=arn: ecs_client.deregister_task_definition(taskDefinition=arn),
                )
    if any(c["status"] == "ACTIVE" for c in ecs_client.describe_clusters(clusters=[named["cluster"]])["clusters"]):
        aws.change(
            f"delete ECS cluster {named['cluster']}",
            lambda: ecs_client.delete_cluster(cluster=named["cluster"]),
        )


def _destroy_infrastructure(aws: Aws, named: dict) -> None:
    logs, iam, ecr_client = (aws.client(name) for name in ("logs", "iam", "ecr"))
    groups = logs.describe_log_groups(logGroupNamePrefix=named["log_group"])["logGroups"]
    if any(group["logGroupName"] == named["log_group"] for group in groups):
        aws.change(
            f"delete log group {named['log_group']}",
            lambda: logs.delete_log_group(logGroupName=named["log_group"]),
        )
    try:
        attached = iam.list_attached_role_policies(RoleName=named["role"])["AttachedPolicies"]
    except botocore.exceptions.ClientError as error:
        if error_code(error) != "NoSuchEntity":
            raise
    else:
        for policy in attached:
            aws.change(
                f"detach {policy['PolicyName']} from IAM role {named['role']}",
                lambda policy=policy: iam.detach_role_policy(RoleName=named["role"], PolicyArn=policy["PolicyArn"]),
            )
        aws.change(f"delete IAM role {named['role']}", lambda: iam.delete_role(RoleName=named["role"]))
    try:
        ecr_client.describe_repositories(repositoryNames=[named["repository"]])
    except botocore.exceptions.ClientError as error:
        if error_code(error) != "RepositoryNotFoundException":
            raise
    else:
        aws.change(
            f"delete ECR repository {named['repository']} and its images",
            lambda: ecr_client.delete_repository(repositoryName=named["repository"], force=True),
        )


def _delete_security_group(ec2, group_id: str, patience_s: float = 600) -> None:
    """Delete the group, waiting while the network interfaces of stopped tasks or of a deleted load balancer
    still hold it (AWS releases them minutes later)."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            ec2.delete_security_group(GroupId=group_id)
            return
        except botocore.exceptions.ClientError as error:
            if error_code(error) != "DependencyViolation" or time.monotonic() > deadline:
                raise
            time.sleep(15)
