"""Reference data of the synthetic operator: tariff plans, cities, numbering, names.

The operator is a provincial mobile operator (Jiangsu); own numbers use its mobile
prefixes, other operators' numbers theirs, so a number's prefix tells its network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# code tables: index in the tuple = the integer code used in the arrays
PAYMENT_TYPES = ("PREPAID", "POSTPAID")
BRANDS = ("GOTONE", "MZONE", "EASYOWN", "ENTERPRISE")
NETWORK_GENS = ("2G", "3G", "4G", "5G")  # code = generation - 2
STATUSES = ("ACTIVE", "SUSPENDED", "TERMINATED")
TERMINATE_REASONS = ("VOLUNTARY", "NON_PAYMENT", "PORT_OUT", "OTHER")
SALES_CHANNELS = ("STORE", "ONLINE", "AGENT", "TELESALES")
SALES_CHANNEL_P = (0.45, 0.30, 0.20, 0.05)
OPERATORS = ("ON_NET", "CMCC", "CUCC", "CTCC", "FIXED", "INTL")
CALL_SCOPES = ("LOCAL", "LONG_DISTANCE", "ROAMING", "INTERNATIONAL")
SMS_TYPES = ("P2P", "A2P", "MMS")
DIRECTIONS = ("MO", "MT")
APNS = ("CMNET", "CMWAP", "IMS")
APN_P = (0.90, 0.04, 0.06)
RECHARGE_TYPES = ("RECHARGE", "BILL_PAYMENT", "REFUND")
RECHARGE_CHANNELS = ("CARD", "ONLINE", "COUNTER", "BANK", "AGENT")
TICKET_CHANNELS = ("HOTLINE", "STORE", "ONLINE", "REGULATOR")
TICKET_CATEGORIES = ("BILLING", "NETWORK", "SERVICE", "VAS", "OTHER")
BILL_ITEMS = ("MONTHLY_FEE", "VOICE", "SMS", "DATA", "VAS", "ROAMING", "DISCOUNT", "ADJUSTMENT")

OP_ON_NET, OP_CMCC, OP_CUCC, OP_CTCC, OP_FIXED, OP_INTL = range(6)
ST_ACTIVE, ST_SUSPENDED, ST_TERMINATED = range(3)
TR_VOLUNTARY, TR_NON_PAYMENT, TR_PORT_OUT, TR_OTHER = range(4)
PREPAID, POSTPAID = 0, 1
BR_GOTONE, BR_MZONE, BR_EASYOWN, BR_ENTERPRISE = range(4)

# own mobile prefixes (CMCC) and the other operators' ones
OWN_PREFIXES = np.array([134, 135, 136, 137, 138, 139, 147, 150, 151, 152, 157, 158, 159,
                         172, 178, 182, 183, 184, 187, 188, 195, 197, 198], dtype=np.int64)
CUCC_PREFIXES = np.array([130, 131, 132, 155, 156, 166, 175, 176, 185, 186], dtype=np.int64)
CTCC_PREFIXES = np.array([133, 149, 153, 173, 177, 180, 181, 189, 191, 199], dtype=np.int64)
INTL_CODES = np.array([852, 853, 886, 1, 44, 81, 82, 65, 61, 49], dtype=np.int64)

# Jiangsu cities: area code, weight, id-card region code, Chinese name
CITIES = (
    ("025", 0.20, 320100, "南京"),
    ("0512", 0.20, 320500, "苏州"),
    ("0510", 0.12, 320200, "无锡"),
    ("0519", 0.08, 320400, "常州"),
    ("0513", 0.08, 320600, "南通"),
    ("0516", 0.08, 320300, "徐州"),
    ("0514", 0.05, 321000, "扬州"),
    ("0515", 0.05, 320900, "盐城"),
    ("0523", 0.04, 321200, "泰州"),
    ("0511", 0.03, 321100, "镇江"),
    ("0517", 0.03, 320800, "淮安"),
    ("0518", 0.02, 320700, "连云港"),
    ("0527", 0.02, 321300, "宿迁"),
)
CITY_CODES = tuple(c[0] for c in CITIES)
CITY_P = np.array([c[1] for c in CITIES]) / sum(c[1] for c in CITIES)
CITY_REGION = np.array([c[2] for c in CITIES], dtype=np.int64)
CITY_NAMES = tuple(c[3] for c in CITIES)
# fixed-line number without its leading 0: area digits * 10^8 + 8 digits
CITY_FIXED_BASE = np.array([int(c[0]) * 10**8 for c in CITIES], dtype=np.int64)

SURNAMES = tuple("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶"
                 "程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛段雷侯龙史陶黎贺顾"
                 "毛郝龚邵万钱严武戴莫孔向汤")
GIVEN_CHARS = tuple("伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂华建国志红玲飞鹏斌宇浩然欣怡子涵梓萱"
                    "一诺思远俊雨桐佳琪晨曦博文婷雪琳嘉豪家辉晓东海燕春梅永健文斌立新凤秋云翔天宁")
PINYIN_SURNAMES = ("Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou",
                   "Xu", "Sun", "Ma", "Zhu", "Hu", "Guo", "He", "Gao", "Lin", "Luo")
PINYIN_GIVEN = ("Wei", "Fang", "Na", "Min", "Jing", "Li", "Qiang", "Lei", "Jun", "Yang", "Yong",
                "Yan", "Jie", "Juan", "Tao", "Ming", "Chao", "Xia", "Ping", "Gang", "Hao", "Yu")
COMPANY_WORDS = ("华信", "鑫达", "恒通", "金陵", "新世纪", "远航", "博润", "天成", "中锐", "汇丰源",
                 "瑞康", "宏图", "长江", "东方", "苏宁", "海纳", "锦程", "德润", "启明", "万和")
COMPANY_TRADES = ("科技", "物流", "贸易", "建设", "电子", "医药", "餐饮", "置业", "纺织", "机械",
                  "信息技术", "商贸", "环保", "汽车服务", "文化传媒")
COMPANY_FORMS = ("有限公司", "股份有限公司", "集团有限公司")

A2P_SENDERS = ("10086", "1065750201", "10690188", "95588", "95555", "106575261234",
               "1069055812", "95533", "10658000")


@dataclass(frozen=True)
class Plan:
    """One tariff plan of the catalogue."""

    plan_id: str
    plan_name: str
    family: int  # 0 prepaid, 1 postpaid (GOTONE), 2 enterprise
    monthly_fee_fen: int
    included_voice_min: int
    included_sms: int
    included_data_mb: int
    gen: int  # 2..5

    @property
    def payment_type(self) -> str:
        return "PREPAID" if self.family == 0 else "POSTPAID"


def _plan(pid: str, name: str, family: int, fee_cny: int, voice: int, sms: int, mb: int, gen: int) -> Plan:
    return Plan(pid, name, family, fee_cny * 100, voice, sms, mb, gen)


PLANS: tuple[Plan, ...] = (
    _plan("PP2G008", "神州行畅聊卡8元", 0, 8, 50, 30, 30, 2),
    _plan("PP3G018", "神州行3G卡18元", 0, 18, 100, 50, 500, 3),
    _plan("PP4G008", "4G流量王8元", 0, 8, 30, 10, 1024, 4),
    _plan("PP4G018", "4G畅享卡18元", 0, 18, 100, 50, 2048, 4),
    _plan("PP4G028", "4G畅享卡28元", 0, 28, 150, 100, 5120, 4),
    _plan("PP4G038", "4G畅享卡38元", 0, 38, 200, 100, 10240, 4),
    _plan("PP4G058", "4G畅享卡58元", 0, 58, 300, 150, 20480, 4),
    _plan("PP5G058", "5G智享卡58元", 0, 58, 300, 150, 30720, 5),
    _plan("PP5G088", "5G智享卡88元", 0, 88, 500, 200, 40960, 5),
    _plan("PP5G128", "5G智享卡128元", 0, 128, 700, 300, 61440, 5),
    _plan("PO3G058", "全球通3G商旅套餐58元", 1, 58, 300, 150, 1024, 3),
    _plan("PO3G028", "全球通3G基础套餐28元", 1, 28, 150, 100, 500, 3),
    _plan("PO4G018", "全球通4G轻享套餐18元", 1, 18, 100, 50, 3072, 4),
    _plan("PO4G038", "全球通4G轻享套餐38元", 1, 38, 200, 100, 10240, 4),
    _plan("PO4G058", "全球通4G套餐58元", 1, 58, 300, 150, 15360, 4),
    _plan("PO4G088", "全球通4G套餐88元", 1, 88, 500, 200, 30720, 4),
    _plan("PO4G128", "全球通4G套餐128元", 1, 128, 800, 300, 40960, 4),
    _plan("PO4G188", "全球通4G套餐188元", 1, 188, 1200, 500, 61440, 4),
    _plan("PO5G128", "全球通5G套餐128元", 1, 128, 800, 300, 51200, 5),
    _plan("PO5G188", "全球通5G套餐188元", 1, 188, 1200, 500, 81920, 5),
    _plan("PO5G288", "全球通5G套餐288元", 1, 288, 2000, 800, 122880, 5),
    _plan("PO5G388", "全球通5G尊享套餐388元", 1, 388, 3000, 1000, 163840, 5),
    _plan("PO5G588", "全球通5G尊享套餐588元", 1, 588, 5000, 1500, 307200, 5),
    _plan("EN4G018", "集团4G基础套餐18元", 2, 18, 100, 50, 3072, 4),
    _plan("EN4G038", "集团4G商务套餐38元", 2, 38, 300, 100, 10240, 4),
    _plan("EN4G058", "集团4G商务套餐58元", 2, 58, 500, 200, 15360, 4),
    _plan("EN4G128", "集团4G商务套餐128元", 2, 128, 1000, 300, 40960, 4),
    _plan("EN5G128", "集团5G商务套餐128元", 2, 128, 1000, 300, 61440, 5),
    _plan("EN5G288", "集团5G商务套餐288元", 2, 288, 2500, 800, 122880, 5),
    _plan("EN5G588", "集团5G商务套餐588元", 2, 588, 6000, 1500, 307200, 5),
)
PLAN_FEE = np.array([p.monthly_fee_fen for p in PLANS], dtype=np.int64)
PLAN_FAMILY = np.array([p.family for p in PLANS], dtype=np.int8)
PLAN_GEN = np.array([p.gen for p in PLANS], dtype=np.int8)
PLAN_IDS = tuple(p.plan_id for p in PLANS)


def choose_plans(family: np.ndarray, gen: np.ndarray, spend_fen: np.ndarray) -> np.ndarray:
    """Plan per line: among the plans of the line's family whose generation is not above the
    line's, the largest fee not above 75% of the line's monthly spend (the newer generation on
    equal fees), else the cheapest such plan. Low spenders on 5G devices keep 4G plans."""
    out = np.empty(len(family), dtype=np.int16)
    for fam in range(3):
        for g in range(2, 6):
            sel = np.flatnonzero((family == fam) & (gen == g))
            if sel.size == 0:
                continue
            cands = [i for i, p in enumerate(PLANS) if p.family == fam and p.gen <= g]
            if not cands:
                cands = [i for i, p in enumerate(PLANS) if p.family == fam]
            cands = np.array(sorted(cands, key=lambda i: (PLANS[i].monthly_fee_fen, PLANS[i].gen)),
                             dtype=np.int16)
            fees = PLAN_FEE[cands]
            pos = np.searchsorted(fees, 0.75 * spend_fen[sel], side="right") - 1
            out[sel] = cands[np.clip(pos, 0, len(cands) - 1)]
    return out


def upgrade_plan_map() -> np.ndarray:
    """Plan a line moves to when its network generation goes up by one: the plan of the same
    family and the next generation with the smallest fee not below the current one."""
    mapping = np.arange(len(PLANS), dtype=np.int16)
    for i, p in enumerate(PLANS):
        nxt = [j for j, q in enumerate(PLANS) if q.family == p.family and q.gen == p.gen + 1]
        if not nxt:
            continue
        above = [j for j in nxt if PLANS[j].monthly_fee_fen >= p.monthly_fee_fen]
        if above:
            mapping[i] = min(above, key=lambda j: (PLANS[j].monthly_fee_fen, j))
        else:
            mapping[i] = max(nxt, key=lambda j: (PLANS[j].monthly_fee_fen, j))
    return mapping


# hour-of-day profiles (relative weights), Asia/Shanghai local time
VOICE_HOURS = np.array([1, 0.5, 0.3, 0.2, 0.2, 0.4, 1.5, 3.5, 6, 8, 9, 8.5, 6.5, 6, 7.5, 8.5, 8.5,
                        8, 7.5, 7.5, 7, 5.5, 3.5, 2], dtype=float)
SMS_HOURS = np.array([1.5, 0.8, 0.4, 0.3, 0.3, 0.5, 1.5, 3.5, 5.5, 6.5, 7, 7, 6.5, 6, 6.5, 7, 7,
                      7, 7, 7.5, 8, 7.5, 5.5, 3], dtype=float)
DATA_HOURS = np.array([4, 2.5, 1.5, 1, 1, 1.2, 2.5, 5, 6.5, 6.5, 6.5, 7, 7.5, 7, 6.5, 6.5, 6.5,
                       7, 7.5, 8.5, 9.5, 10, 9, 6.5], dtype=float)
OFFICE_HOURS = np.array([0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.5, 2, 5, 8, 9, 9, 7, 7, 8.5, 8.5, 8,
                         7, 5, 4.5, 4, 3, 1.5, 0.6], dtype=float)
