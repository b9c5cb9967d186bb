"""Where the service runs: the VPC and subnets, and the security groups that decide who reaches what.

Without deploy.subnets the tasks (and the load balancer) go into the default VPC's default subnets, which are
public, one per zone (of three zones at most). A security group of tweetbot's own lets into the tasks only the
service port: from the load balancer's group when there is one, else (the single public task) from
deploy.allowed_cidrs. Everything may go out: tasks pull from ECR and write logs.
"""

from __future__ import annotations

from deploy.aws import Aws
from tweetbot.runtime.errors import UserError

# Of the default subnets (one per zone), the first three zones': they ride out a zone's outage, and each zone
# the load balancer spans costs a public IPv4 address (us-east-1 has six zones).
DEFAULT_ZONES = 3


def placement(aws: Aws, subnets: list[str], zones_needed: int) -> tuple[str, list[str]]:
    """The VPC and the subnets to run in: deploy.subnets, else the default VPC's default subnets."""
    ec2 = aws.client("ec2")
    if subnets:
        found = ec2.describe_subnets(SubnetIds=subnets)["Subnets"]
        vpcs = sorted({subnet["VpcId"] for subnet in found})
        if len(vpcs) > 1:
            raise UserError(f"deploy.subnets lie in {len(vpcs)} VPCs ({', '.join(vpcs)}): pick subnets of one VPC")
        vpc = vpcs[0]
    else:
        vpc = default_vpc(aws)
        found = ec2.describe_subnets(
            Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "default-for-az", "Values": ["true"]}]
        )["Subnets"]
        if not found:
            raise UserError(f"the default VPC {vpc} has no default subnets: set deploy.subnets in params.yaml")
        found = sorted(found, key=lambda subnet: subnet["AvailabilityZone"])[:DEFAULT_ZONES]
    zones = sorted({subnet["AvailabilityZone"] for subnet in found})
    if len(zones) < zones_needed:
        where = "deploy.subnets" if subnets else f"the default subnets of {vpc}"
        raise UserError(
            f"{where} cover {len(zones)} zone(s) ({', '.join(zones)}): a load balancer needs subnets in "
            f"{zones_needed} zones at least: add one in another zone (or set deploy.load_balancer to false)"
        )
    return vpc, sorted(subnet["SubnetId"] for subnet in found)


def default_vpc(aws: Aws) -> str:
    vpcs = aws.client("ec2").describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise UserError(
            f"no default VPC in {aws.region}: set deploy.subnets (and deploy.security_groups) in params.yaml"
        )
    return vpcs[0]["VpcId"]


def vpc_of(aws: Aws, subnets: list[str]) -> str | None:
    """The VPC a deployment in `subnets` (none: the default VPC's) lives in, None if there is none."""
    ec2 = aws.client("ec2")
    if subnets:
        found = ec2.describe_subnets(SubnetIds=subnets[:1])["Subnets"]
        return found[0]["VpcId"] if found else None
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    return vpcs[0]["VpcId"] if vpcs else None


def awsvpc_configuration(subnets: list[str], security_groups: list[str], assign_public_ip: bool) -> dict:
    """The service's `networkConfiguration`."""
    return {
        "awsvpcConfiguration": {
            "subnets": sorted(subnets),
            "securityGroups": sorted(security_groups),
            "assignPublicIp": "ENABLED" if assign_public_ip else "DISABLED",
        }
    }


def tasks_group_name(name: str) -> str:
    return f"{name}-service"


def from_cidrs(port: int, cidrs: list[str]) -> dict:
    """An ingress rule: TCP `port` from these address ranges."""
    return {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": [{"CidrIp": c} for c in sorted(cidrs)]}


def from_groups(port: int, groups: list[str]) -> dict:
    """An ingress rule: TCP `port` from the members of these security groups."""
    return {
        "IpProtocol": "tcp",
        "FromPort": port,
        "ToPort": port,
        "UserIdGroupPairs": [{"GroupId": group} for group in sorted(groups)],
    }


def find_security_group(aws: Aws, group_name: str, vpc: str) -> dict | None:
    groups = aws.client("ec2").describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [group_name]}, {"Name": "vpc-id", "Values": [vpc]}]
    )["SecurityGroups"]
    return groups[0] if groups else None


def ensure_security_group(
    aws: Aws,
    group_name: str,
    vpc: str,
    ingress: list[dict],
    tags: dict[str, str],
    purpose: str,
    labels: dict[str, str] | None = None,
) -> str:
    """The id of tweetbot's group `group_name`, which lets in exactly `ingress`, created or corrected.

    `labels` name sources in what is printed (a group that a plan has not made yet has no id)."""
    ec2 = aws.client("ec2")
    group = find_security_group(aws, group_name, vpc)
    if group is None:
        group_id = aws.change(
            f"create security group {group_name} in {vpc} ({purpose})",
            lambda: ec2.create_security_group(
                GroupName=group_name,
                Description=f"tweetbot: {purpose}",
                VpcId=vpc,
                TagSpecifications=[
                    {
                        "ResourceType": "security-group",
                        "Tags": [{"Key": key, "Value": value} for key, value in {"Name": group_name, **tags}.items()],
                    }
                ],
            )["GroupId"],
            planned=f"(new security group {group_name})",
        )
        rules = []
    else:
        group_id, rules = group["GroupId"], group["IpPermissions"]
    wanted, present = _atoms(ingress), _atoms(rules)
    if wanted - present:
        aws.change(
            f"let into security group {group_name}: {_describe(wanted - present, labels or {})}",
            lambda: ec2.authorize_security_group_ingress(
                GroupId=group_id, IpPermissions=_permissions(wanted - present)
            ),
        )
    if present - wanted:  # the group is tweetbot's own: what it lets in is exactly what is asked
        aws.change(
            f"stop letting into security group {group_name}: {_describe(present - wanted, labels or {})}",
            lambda: ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=_permissions(present - wanted)),
        )
    return group_id


# A rule reduced to its atoms, (protocol, from port, to port, "cidr"/"group", source): AWS merges and splits the
# permissions it is given, the atoms stay the same.
def _atoms(permissions: list[dict]) -> set[tuple]:
    atoms = set()
    for rule in permissions:
        key = (rule.get("IpProtocol"), rule.get("FromPort"), rule.get("ToPort"))
        atoms |= {(*key, "cidr", item["CidrIp"]) for item in rule.get("IpRanges", [])}
        atoms |= {(*key, "cidr6", item["CidrIpv6"]) for item in rule.get("Ipv6Ranges", [])}
        atoms |= {(*key, "group", item["GroupId"]) for item in rule.get("UserIdGroupPairs", [])}
        atoms |= {(*key, "prefix", item["PrefixListId"]) for item in rule.get("PrefixListIds", [])}
    return atoms


def _permissions(atoms: set[tuple]) -> list[dict]:
    sources = {
        "cidr": ("IpRanges", "CidrIp"),
        "cidr6": ("Ipv6Ranges", "CidrIpv6"),
        "group": ("UserIdGroupPairs", "GroupId"),
        "prefix": ("PrefixListIds", "PrefixListId"),
    }
    permissions = []
    for protocol, from_port, to_port, kind, source in sorted(atoms, key=str):
        rule = {"IpProtocol": protocol, sources[kind][0]: [{sources[kind][1]: source}]}
        if from_port is not None:
            rule |= {"FromPort": from_port, "ToPort": to_port}
        permissions.append(rule)
    return permissions


def _describe(atoms: set[tuple], labels: dict[str, str]) -> str:
    described = []
    for protocol, from_port, to_port, _, source in sorted(atoms, key=str):
        ports = from_port if from_port == to_port else f"{from_port}-{to_port}"
        described.append(f"{protocol} {ports} from {labels.get(source, source)}")
    return ", ".join(described)
