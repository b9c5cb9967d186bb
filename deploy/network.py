"""Where the service's tasks run: subnets and security groups from params, or the default VPC's.

Without subnets in params the tasks go into the default VPC's default subnets, behind a security group of
their own that lets in only the service port (and lets everything out: tasks pull from ECR and write logs).
"""

from __future__ import annotations

from deploy.aws import Aws
from tweetbot.runtime.errors import UserError


def network_configuration(
    aws: Aws, name: str, port: int, subnets: list, security_groups: list, assign_public_ip: bool
) -> dict:
    """The service's `awsvpcConfiguration`, creating its security group in the default VPC if needed."""
    if security_groups and not subnets:
        raise UserError("deploy.security_groups needs deploy.subnets too: set both, or neither")
    if not subnets:
        vpc = default_vpc(aws)
        subnets = default_subnets(aws, vpc)
        security_groups = [ensure_security_group(aws, security_group_name(name), vpc, port)]
    return {
        "awsvpcConfiguration": {
            "subnets": sorted(subnets),
            "securityGroups": sorted(security_groups),
            "assignPublicIp": "ENABLED" if assign_public_ip else "DISABLED",
        }
    }


def security_group_name(name: str) -> str:
    return f"{name}-service"


def default_vpc(aws: Aws) -> str:
    vpcs = aws.client("ec2").describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise UserError(f"no default VPC in {aws.region}: set deploy.subnets and deploy.security_groups in params.yaml")
    return vpcs[0]["VpcId"]


def default_subnets(aws: Aws, vpc: str) -> list[str]:
    subnets = aws.client("ec2").describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "default-for-az", "Values": ["true"]}]
    )["Subnets"]
    if not subnets:
        raise UserError(f"the default VPC {vpc} has no default subnets: set deploy.subnets in params.yaml")
    return sorted(subnet["SubnetId"] for subnet in subnets)


def find_security_group(aws: Aws, group_name: str, vpc: str) -> dict | None:
    groups = aws.client("ec2").describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [group_name]}, {"Name": "vpc-id", "Values": [vpc]}]
    )["SecurityGroups"]
    return groups[0] if groups else None


def ensure_security_group(aws: Aws, group_name: str, vpc: str, port: int) -> str:
    """The id of the group that opens only `port` (TCP, from anywhere), created or corrected if needed."""
    ec2 = aws.client("ec2")
    wanted = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    group = find_security_group(aws, group_name, vpc)
    if group is None:
        group_id = aws.change(
            f"create security group {group_name} in {vpc}",
            lambda: ec2.create_security_group(
                GroupName=group_name, Description=f"{group_name}: only the service port", VpcId=vpc
            )["GroupId"],
            planned=f"(new security group {group_name})",
        )
        rules = []
    else:
        group_id, rules = group["GroupId"], group["IpPermissions"]
    opened = [_rule(rule) for rule in rules]
    if _rule(wanted) not in opened:
        aws.change(
            f"open TCP {port} in security group {group_name}",
            lambda: ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[wanted]),
        )
    others = [rule for rule in rules if _rule(rule) != _rule(wanted)]
    if others:  # the group is this service's own: it opens the service port and nothing else
        aws.change(
            f"close {len(others)} other ingress rule(s) in security group {group_name}",
            lambda: ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=others),
        )
    return group_id


def _rule(permission: dict) -> tuple:
    cidrs = sorted(item["CidrIp"] for item in permission.get("IpRanges", []))
    return permission.get("IpProtocol"), permission.get("FromPort"), permission.get("ToPort"), tuple(cidrs)
